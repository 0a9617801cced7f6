{
  description = "{{.Name}}: a Linux kernel module developed with kwatch";

  # The VM's kernel, and so the module's build, come from this nixpkgs;
  # flake.lock pins it once the first build has run.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      system = "x86_64-linux";
    in
    {
      # The VM kwatch boots: config.system.build.vm gives bin/run-kwatch-vm.
      nixosConfigurations.vm = nixpkgs.lib.nixosSystem {
        inherit system;
        modules = [ ./configuration.nix ];
      };

      # Built from the VM's own kernel package set, so the module matches the
      # running kernel exactly: same version magic, config and Rust metadata.
      packages.${system} = rec {
        module = self.nixosConfigurations.vm.config.boot.kernelPackages.callPackage ./module.nix { };
        default = module;
      };
    };
}
