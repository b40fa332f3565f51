// The node's sandbox ("pause") program: it holds a pod's namespaces open, does nothing else and
// exits when it is asked to stop. Built static (CGO_ENABLED=0) into an image of its own by
// scripts/control-plane, because no image can be pulled here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// As the first process of a pod's PID namespace it inherits orphans: reap them.
	children := make(chan os.Signal, 8)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			return
		case <-children:
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
