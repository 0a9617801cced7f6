# The NixOS VM that kwatch runs the module in.
{ config, pkgs, ... }:
{
  # Linux 6.18 (an LTS), fetched from the binary cache: src/printerfact.rs
  # is written against 6.18's Rust misc device API (read_iter came in 6.18,
  # and the API keeps changing after it), while linuxPackages_latest moves on
  # to newer kernels. A new kwatch init project follows linuxPackages_latest.
  boot.kernelPackages = pkgs.linuxPackages_6_18;

  # The module is Rust, so the kernel needs CONFIG_RUST=y. nixpkgs builds
  # every x86_64 kernel since 6.12 with it. Do not force it with a
  # boot.kernelPatches entry: any entry changes the kernel's configuration,
  # the binary cache no longer has that kernel, and nix compiles it locally,
  # for hours.
  assertions = [
    {
      assertion = config.boot.kernelPackages.kernel.withRust;
      message = "the VM's kernel (linux ${config.boot.kernelPackages.kernel.version}) has no Rust support (CONFIG_RUST), which the module needs: set boot.kernelPackages in configuration.nix to a kernel of 6.12 or newer, where nixpkgs enables Rust on x86_64";
    }
  ];

  # pr_info! and pr_debug! messages reach the serial console too.
  boot.consoleLogLevel = 7;

  # Names the VM script bin/run-kwatch-vm.
  networking.hostName = "kwatch";

  services.openssh = {
    enable = true;
    openFirewall = true;
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "prohibit-password";
    };
  };

  # kwatch logs in as root with this key, which it keeps in .kwatch/.
  users.users.root.openssh.authorizedKeys.keys = [ ];

  # These options exist only in the VM variant that config.system.build.vm uses.
  # No forwardPorts: kwatch picks a free 127.0.0.1 port on each start and hands
  # it to the VM script in QEMU_NET_OPTS, so two projects never clash.
  virtualisation.vmVariant.virtualisation = {
    graphics = false;
    memorySize = 2048;
    cores = 2;
    diskSize = 4096;
  };

  system.stateVersion = "25.11";
}
