package main

import "os"

// notifyHUP does nothing: Windows has no SIGHUP, so there is no reload.
func notifyHUP(chan<- os.Signal) {}
