package etcdtest

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// Proxy is a loopback TCP proxy in front of a server. Cut drops every
// connection and refuses new ones, as a network partition or a crashed etcd
// would; Restore lets clients through again. (Stopping an embedded server
// instead would drain its streams gracefully and keep leases alive meanwhile.)
type Proxy struct {
	t      testing.TB
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Proxy starts a proxy to s, stopped when the test ends.
func (s *Server) Proxy() *Proxy {
	p := &Proxy{t: s.t, addr: FreeAddr(s.t), target: strings.TrimPrefix(s.Endpoint(), "http://"), conns: map[net.Conn]struct{}{}}
	p.Restore()
	s.t.Cleanup(p.Cut)
	return p
}

// Endpoint is the client URL of the proxy.
func (p *Proxy) Endpoint() string { return "http://" + p.addr }

// Restore accepts connections again.
func (p *Proxy) Restore() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen: %v", err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go p.accept(ln)
}

// Cut closes the listener and every open connection, and waits for the
// proxy's goroutines.
func (p *Proxy) Cut() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}
