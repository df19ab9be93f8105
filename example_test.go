//go:build linux

package shmlane_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/shmlane/shmlane"
)

// A listener and a dialer meet by name; here they are two goroutines of
// one process, but they would usually be two processes.
func ExampleListen() {
	dir, err := os.MkdirTemp("", "shmlane-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	l, err := shmlane.Listen("greeter", &shmlane.ListenOptions{RuntimeDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept(ctx)
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		buf := make([]byte, c.MaxMessage())
		n, err := c.Recv(buf)
		if err != nil {
			done <- err
			return
		}
		done <- c.Send(append([]byte("hello, "), buf[:n]...))
	}()

	c, err := shmlane.Dial(ctx, "greeter", &shmlane.DialOptions{RuntimeDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("transport:", c.Transport())
	if err := c.Send([]byte("dialer")); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, c.MaxMessage())
	n, err := c.Recv(buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(buf[:n]))
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// transport: ring
	// hello, dialer
}
