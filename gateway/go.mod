module github.com/ripple-sync/ripple/gateway

go 1.26.8
