module github.com/ripple-sync/ripple/e2e

go 1.26.8
