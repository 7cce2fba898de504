module github.com/ripple-sync/ripple/client

go 1.26.8

require (
	github.com/gorilla/websocket v1.5.3
	github.com/ripple-sync/ripple/schema v0.0.0-00010101000000-000000000000
)

require (
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/pgx/v5 v5.12.0 // indirect
	golang.org/x/text v0.41.0 // indirect
)

replace github.com/ripple-sync/ripple/schema => ../schema
