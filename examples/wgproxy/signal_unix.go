//go:build !windows

package main

import (
	"os"
	"os/signal"
	"syscall"
)

// notifyHUP delivers SIGHUP to c.
func notifyHUP(c chan<- os.Signal) { signal.Notify(c, syscall.SIGHUP) }
