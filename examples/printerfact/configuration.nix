# The NixOS VM that kwatch runs the module in.
{ pkgs, ... }:
{
  # The newest kernel: Rust misc devices can implement read() (read_iter)
  # only since Linux 6.18, and the LTS kernel (linuxPackages) is older.
  boot.kernelPackages = pkgs.linuxPackages_latest;

  # Builds the kernel with CONFIG_RUST=y. Redundant on x86_64, where nixpkgs
  # enables Rust for every kernel since 6.12, but harmless.
  boot.kernelPatches = [
    {
      name = "Rust Support";
      patch = null;
      features.rust = true;
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
