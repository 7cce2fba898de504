module github.com/ripple-sync/ripple/client

go 1.26.8
