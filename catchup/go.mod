module github.com/ripple-sync/ripple/catchup

go 1.26.8
