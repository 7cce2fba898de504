module github.com/ripple-sync/ripple/cmd/ripple

go 1.26.8
