//! The announcers that every announcing mode (`standalone`, `speaker`) feeds with each new
//! [`World`](ferrolb_speaker::world::World): one line per announcer.
//!
//! Must not: decide anything; each announcer derives its work from the world it is given.

use ferrolb_speaker::world::Announcer;

/// Starts every announcer of this process (each owns its threads or tasks until `shutdown`).
pub fn announcers() -> anyhow::Result<Vec<Box<dyn Announcer>>> {
    let all: Vec<Box<dyn Announcer>> =
        vec![Box::new(ferrolb_speaker::layer2::Layer2Announcer::start()?)];
    Ok(all)
}
