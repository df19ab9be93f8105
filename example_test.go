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

// A sender queues work, then changes its mind: an urgent message overtakes
// the queue and a flush discards what the receiver has not taken yet. The
// same calls work when the connection falls back to the socket.
func ExampleConn_SendUrgent() {
	dir, err := os.MkdirTemp("", "shmlane-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	l, err := shmlane.Listen("jobs", &shmlane.ListenOptions{RuntimeDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted := make(chan *shmlane.Conn, 1)
	go func() {
		c, err := l.Accept(ctx)
		if err != nil {
			log.Fatal(err)
		}
		accepted <- c
	}()
	sender, err := shmlane.Dial(ctx, "jobs", &shmlane.DialOptions{RuntimeDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer sender.Close()
	receiver := <-accepted
	defer receiver.Close()

	for _, job := range []string{"job 1", "job 2", "job 3"} {
		if err := sender.Send([]byte(job)); err != nil {
			log.Fatal(err)
		}
	}
	if err := sender.SendUrgent([]byte("abort")); err != nil {
		log.Fatal(err)
	}
	if err := sender.Flush(); err != nil { // jobs 1 to 3 are discarded
		log.Fatal(err)
	}
	if err := sender.Send([]byte("job 4")); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, receiver.MaxMessage())
	for range 2 {
		n, urgent, err := receiver.RecvMsg(ctx, buf)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s (urgent: %v)\n", buf[:n], urgent)
	}
	fmt.Println("discarded:", receiver.Stats().Discarded)
	// Output:
	// abort (urgent: true)
	// job 4 (urgent: false)
	// discarded: 3
}
