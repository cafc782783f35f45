package swarm

import (
	"net"
	"syscall"
	"testing"
)

// BenchmarkLoopbackPingPong is the floor under a heartbeat's cost on this
// machine: one goroutine writes 8 bytes on one end of a loopback TCP
// connection, reads them on the other, writes back and reads again, with
// blocking syscalls and no thread ever sleeping. docs/benchmarks.md
// compares it with what a heartbeat costs across processes.
func BenchmarkLoopbackPingPong(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	server, ok := <-accepted
	if !ok {
		b.Fatal("accept failed")
	}
	defer server.Close()
	fd := func(c net.Conn) int {
		f, err := c.(*net.TCPConn).File() // a blocking duplicate
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		return int(f.Fd())
	}
	cfd, sfd := fd(client), fd(server)
	msg, buf := make([]byte, 8), make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := syscall.Write(cfd, msg); err != nil {
			b.Fatal(err)
		}
		if _, err := syscall.Read(sfd, buf); err != nil {
			b.Fatal(err)
		}
		if _, err := syscall.Write(sfd, msg); err != nil {
			b.Fatal(err)
		}
		if _, err := syscall.Read(cfd, buf); err != nil {
			b.Fatal(err)
		}
	}
}
