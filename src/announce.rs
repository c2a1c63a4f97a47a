//! The announcers that every announcing mode (`standalone`, `speaker`) feeds with each new
//! [`World`](ferrolb_speaker::world::World): one line per announcer.
//!
//! Must not: decide anything; each announcer derives its work from the world it is given.

use ferrolb_speaker::layer2::{Layer2Announcer, Layer2Metrics};
use ferrolb_speaker::world::Announcer;
use prometheus_client::registry::Registry;

/// Starts every announcer of this process (each owns its threads or tasks until `shutdown`),
/// registering their metrics into `registry`; BGP also accepts connections on `bgp_listen`.
pub fn announcers(
    registry: &mut Registry,
    bgp_listen: &[std::net::SocketAddr],
) -> anyhow::Result<Vec<Box<dyn Announcer>>> {
    let all: Vec<Box<dyn Announcer>> = vec![
        Box::new(Layer2Announcer::start_with_metrics(
            Layer2Metrics::register(registry),
        )?),
        Box::new(
            ferrolb_speaker::bgp::announcer::BgpAnnouncer::start(
                ferrolb_speaker::bgp::metrics::BgpMetrics::register(registry),
            )
            .with_listener(bgp_listen)?,
        ),
    ];
    Ok(all)
}
