// Package vmtest runs a Go test binary inside a throwaway qemu VM that
// boots a stock Debian kernel, so that tests can use kernel features the
// host lacks (the WireGuard module, to begin with).
//
// # What it boots
//
// [Prepare] fetches Debian's linux-image-amd64 (the package its
// dependency names), busybox-static, wireguard-tools and libc6 with
// `apt-get download`, unpacks them with `dpkg-deb -x`, lists the wireguard
// module and its dependencies with `modprobe --show-depends` (kmod) and
// extracts the kernel's ELF (vmlinux) from the compressed image, as the
// kernel's scripts/extract-vmlinux does, so that qemu boots it directly
// through PVH; when that fails it boots the bzImage, which takes a few
// seconds longer. Nothing but Debian packages is downloaded.
//
// [Run] writes an initramfs (newc cpio, gzip) with busybox, wg(8), the
// shared libraries of every dynamic binary in it, the modules and the
// payload, and boots it with qemu-system-x86_64 under TCG, with no
// network device (-nic none): the guest has only its loopback. Its init
// loads the modules, brings lo up, runs the payload and prints the
// payload's exit status on the serial console in a line with a random
// marker, which Run reads back. qemu is killed (by PID) when the context
// ends.
//
// [RunTest] is the usual entry point: it builds the calling package's
// test binary with CGO_ENABLED=0 (`go test -c`), so that it needs no
// libraries in the guest, and runs the named tests in the VM. Tests meant
// for the guest only call [RequireVM] first.
//
// # Cache
//
// The unpacked packages are kept between runs in $WGKIT_VMTEST_CACHE, or
// else in wgkit-vmtest under os.UserCacheDir (~/.cache/wgkit-vmtest),
// one directory per package and version, so a run after the first
// downloads nothing unless apt's candidate version changed; Prepare then
// removes the versions it replaced. The kernel is kept as its ELF and the
// few modules it needs: about 80 MB in all. Prepare holds a lock file in
// that directory, so test processes of several packages can share it.
//
// # Needs
//
// qemu-system-x86_64 (qemu-system-x86), apt-get with package lists
// (`apt-get update`), dpkg-deb, depmod and modprobe (kmod), and xz
// (xz-utils) to extract vmlinux. RunTest skips with a reason when one of
// these is missing and in -short mode; it needs no root on the host.
package vmtest
