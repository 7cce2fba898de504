module github.com/ripple-sync/ripple/testenv

go 1.26.8
