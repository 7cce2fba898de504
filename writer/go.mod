module github.com/ripple-sync/ripple/writer

go 1.26.8
