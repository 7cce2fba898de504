// Command ripple is Ripple's one binary. Its subcommands run each part of the
// system (ingest, gateway, writer), all of them at once on a laptop (dev), and
// the operator tasks around them (migrate, enable, disable, prune, token,
// watch).
//
// Every flag has an environment-variable twin: --database-url is also
// RIPPLE_DATABASE_URL, --nats-url is RIPPLE_NATS_URL, and so on (upper case,
// dashes become underscores, prefix RIPPLE_). A flag given on the command line
// wins over the environment.
package main
