module github.com/ripple-sync/ripple/ingest

go 1.26.8
