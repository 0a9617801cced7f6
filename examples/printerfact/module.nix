# The kernel module, built against the VM's kernel (see flake.nix).
{ kernel, kernelModuleMakeFlags }:

kernel.stdenv.mkDerivation {
  pname = "printerfact";
  version = "0.1";
  src = ./src;

  nativeBuildInputs = kernel.moduleBuildDependencies;

  # kernelModuleMakeFlags, not kernel.makeFlags, which build the kernel itself.
  # No LLVM=1: nixpkgs builds its kernels with GCC.
  makeFlags = kernelModuleMakeFlags ++ [
    "KDIR=${kernel.dev}/lib/modules/${kernel.modDirVersion}/build"
  ];

  # Installs lib/modules/<version>/updates/printerfact.ko.xz (nixpkgs kernels
  # compress modules), plus a plain ko/printerfact.ko that loads without xz.
  installFlags = [ "INSTALL_MOD_PATH=${placeholder "out"}" ];
  installTargets = [ "modules_install" ];
  postInstall = ''
    install -Dm444 *.ko -t $out/ko
  '';

  meta.broken = !kernel.withRust;
}
