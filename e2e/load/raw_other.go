//go:build !linux

package load

import "context"

// rawReaders has no epoll loops outside Linux: ModeRipple connections are
// read by gorilla/websocket, one goroutine each.
type rawReaders struct{}

func (g *Generator) startReaders(int) error { return nil }

func (r *rawReaders) close() {}

func (g *Generator) runRaw(ctx context.Context, i int, sem chan struct{}, readyc chan<- struct{}, errc chan<- error) {
	g.run(ctx, i, sem, readyc, errc)
}
