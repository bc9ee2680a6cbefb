package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// DataLock is the exclusive hold of a data directory by one duet process.
// Pebble locks its own directory too, but its refusal ("resource
// temporarily unavailable") names neither the directory nor the process
// holding it; this lock, taken first, says both.
type DataLock struct{ f *os.File }

// LockData takes dir's lock file, creating dir when missing, and writes
// this process's id into it. A directory held by another process is an
// error naming that process.
func LockData(dir string) (*DataLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "duet.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := "another duet process"
			if raw, _ := os.ReadFile(path); len(raw) > 0 {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil {
					who += fmt.Sprintf(" (pid %d)", pid)
				}
			}
			return nil, fmt.Errorf("%s is in use by %s", dir, who)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &DataLock{f: f}, nil
}

// Close releases the lock; the file stays, for the next process to take.
func (l *DataLock) Close() error {
	if l == nil {
		return nil
	}
	return l.f.Close()
}
