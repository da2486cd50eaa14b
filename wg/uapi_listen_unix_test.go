//go:build !windows

package wg

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestListenUAPIUmaskZero checks, with the process umask at 0, that the
// socket is never reachable by others: whenever it is writable by group
// or others its directory lets nobody but the owner in. A poller watches
// the socket while ListenUAPI runs again and again; the directory is
// looked at after the socket, which is sound because ListenUAPI only ever
// tightens it. Not parallel: the umask belongs to the whole process.
func TestListenUAPIUmaskZero(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	tests := []struct {
		name string
		mode fs.FileMode // of the existing directory; 0 for none
	}{
		{"new directory", 0},
		{"existing 0755 directory", 0o755},
		{"existing 0777 directory", 0o777},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "a", "run")
			if tt.mode != 0 {
				if err := os.MkdirAll(dir, tt.mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dir, tt.mode); err != nil {
					t.Fatal(err)
				}
			}
			sock := filepath.Join(dir, "wgumask.sock")
			var stop atomic.Bool
			var exposed, seen atomic.Int32
			done := make(chan struct{})
			go func() {
				defer close(done)
				for !stop.Load() {
					fi, err := os.Lstat(sock)
					if err != nil {
						continue
					}
					seen.Add(1)
					di, err := os.Lstat(dir)
					if err == nil && fi.Mode().Perm()&0o022 != 0 && di.Mode().Perm()&0o011 != 0 {
						exposed.Add(1)
					}
				}
			}()
			const rounds = 150
			for range rounds {
				l, err := ListenUAPI(dir, "wgumask")
				if err != nil {
					stop.Store(true)
					<-done
					t.Fatal(err)
				}
				l.Close()
			}
			stop.Store(true)
			<-done
			if n := exposed.Load(); n > 0 {
				t.Errorf("socket writable by others in a directory open to them, seen %d times in %d rounds", n, rounds)
			}
			if seen.Load() == 0 {
				t.Log("the poller never saw the socket; the check proved nothing this run")
			}
			l, err := ListenUAPI(dir, "wgumask")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			for path, want := range map[string]fs.FileMode{dir: 0o700, filepath.Dir(dir): 0o700, sock: 0o600} {
				if tt.mode != 0 && path == filepath.Dir(dir) {
					continue // created by the test
				}
				fi, err := os.Lstat(path)
				if err != nil {
					t.Fatal(err)
				}
				if got := fi.Mode().Perm(); got != want {
					t.Errorf("%s has mode %v, want %v", path, got, want)
				}
			}
		})
	}
}

// TestListenUAPIRefusesDir checks the directories ListenUAPI will not put
// a socket in.
func TestListenUAPIRefusesDir(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) // makes dir
		root  bool                           // the setup needs root
	}{
		{"symbolic link", func(t *testing.T, dir string) {
			target := filepath.Join(filepath.Dir(dir), "target")
			if err := os.Mkdir(target, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, dir); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"owned by another user", func(t *testing.T, dir string) {
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root && os.Geteuid() != 0 {
				t.Skip("needs root to give the directory to another user")
			}
			dir := filepath.Join(t.TempDir(), "run")
			tt.setup(t, dir)
			before, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			l, err := ListenUAPI(dir, "wgrefuse")
			if err == nil {
				l.Close()
			}
			if !errors.Is(err, os.ErrPermission) {
				t.Errorf("ListenUAPI = %v, want an error wrapping os.ErrPermission", err)
			}
			if _, err := os.Lstat(filepath.Join(dir, "wgrefuse.sock")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket created anyway: %v", err)
			}
			after, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if before.Mode() != after.Mode() {
				t.Errorf("directory mode changed from %v to %v", before.Mode(), after.Mode())
			}
		})
	}
}
