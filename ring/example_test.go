package ring_test

import (
	"fmt"
	"io"
	"log"

	"github.com/shmlane/shmlane/ring"
)

// A segment holds one ring. Here both sides live in one process; across
// processes, pass seg.File() to the other one (exec.Cmd.ExtraFiles or
// SCM_RIGHTS) and attach there with ring.Open(f) and Consumer.
func Example() {
	seg, err := ring.Create(&ring.Config{Capacity: 64 << 10})
	if err != nil {
		log.Fatal(err)
	}
	defer seg.Close()
	p, err := seg.Producer(nil)
	if err != nil {
		log.Fatal(err)
	}
	c, err := seg.Consumer(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	p.Send([]byte("hello"))
	buf, _ := p.Reserve(5) // zero-copy: fill in place, then publish
	copy(buf, "world")
	p.Commit()
	p.Close()

	msg := make([]byte, c.MaxMessage())
	for {
		n, err := c.Recv(msg)
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(string(msg[:n]))
	}
	// Output:
	// hello
	// world
}
