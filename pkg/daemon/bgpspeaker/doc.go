// Package bgpspeaker announces this node's prefixes (IPAM blocks and
// delegated prefixes) to upstream routers over BGP, with an embedded
// GoBGP server. ipamd is its only user: plugins must never import it.
//
// The API is declarative. ipamd derives the full set of routes from its
// state and hands it over — to Start once, then to SetRoutes after every
// change; the speaker announces what is new and withdraws what is gone:
//
//	sp, err := bgpspeaker.New(cfg.BGP, logger)
//	err = sp.Start(ctx, routesFromState())
//	…
//	err = sp.SetRoutes(ctx, routesFromState())
//	…
//	err = sp.Stop(ctx) // planned: peers keep the routes (graceful restart)
//
// See README.md for the configuration, graceful restart and the status.
package bgpspeaker
