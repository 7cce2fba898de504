module github.com/ripple-sync/ripple/schema

go 1.26.8
