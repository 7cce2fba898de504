// Package e2e runs Ripple's whole topology — Postgres primary and replica,
// NATS (single, cluster, super-cluster), ingest, gateways, writers and Go
// clients — and checks the consistency contract end to end. It also holds the
// load generators behind `make bench` and tests of the deployment material.
package e2e
