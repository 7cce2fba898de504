module github.com/ripple-sync/ripple/migrations

go 1.26.8
