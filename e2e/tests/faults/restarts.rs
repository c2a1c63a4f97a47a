//! Restarts on both ends of a BGP session: `ferrolb standalone` SIGKILLed and restarted while
//! the desired set changes, BIRD killed and restarted; the routes at BIRD are exactly the
//! desired set each time, and ferrolb's memory does not grow.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferrolb_e2e::prereq::{
    require,
    Need::{Program, Root},
};
use ferrolb_e2e::routers::Bird;

use crate::lab::{bird_prefixes, desired_prefixes, services, size, wait_until, BgpLab};

/// SIGKILL and restart `ferrolb standalone` (5 times in CI, 20 with FERROLB_SOAK=1) while BIRD
/// peers with it; between kill and restart one Service is removed and another added, so a stale
/// route would show. After every restart BIRD holds exactly the desired set.
#[test]
fn speaker_sigkill_restarts_leave_exactly_the_desired_routes() -> Result<()> {
    if !require(&[Root, Program("bird"), Program("birdc")])? {
        return Ok(());
    }
    let mut ids: BTreeSet<usize> = (0..20).collect();
    let lab = BgpLab::new("restarts", &services(ids.iter().copied()))?;
    let bird = lab.bird()?;
    let mut speaker = lab.start()?;
    let limit = Duration::from_secs(60);
    wait_until(limit, "first full set", || {
        let want = desired_prefixes(&lab.dir, &ids);
        want.len() == ids.len() && bird_prefixes(&bird) == want
    })
    .with_context(|| lab.dir.read("node.log"))?;
    let restarts = size(5, 20);
    let mut took = Vec::new();
    for k in 0..restarts {
        speaker.kill();
        // Change the desired set while the speaker is dead.
        let gone = *ids.iter().next().context("ids")?;
        ids.remove(&gone);
        ids.insert(20 + k);
        lab.dir
            .write("services.yaml", &services(ids.iter().copied()))?;
        let t = Instant::now();
        speaker = lab.start()?;
        let mut last = BTreeSet::new();
        let r = wait_until(limit, "desired set after restart", || {
            let want = desired_prefixes(&lab.dir, &ids);
            last = bird_prefixes(&bird);
            want.len() == ids.len() && last == want
        });
        if let Err(e) = r {
            bail!(
                "restart {k}: {e}\nBIRD holds {last:?}\nwant {:?}\n{}",
                desired_prefixes(&lab.dir, &ids),
                lab.dir.read("node.log")
            );
        }
        took.push(t.elapsed());
    }
    let final_set = bird_prefixes(&bird);
    anyhow::ensure!(final_set == desired_prefixes(&lab.dir, &ids));
    eprintln!(
        "measured: {restarts} SIGKILL+restarts, {} routes each; restart -> exact set at BIRD: \
         min {:?} max {:?}; final set equals desired ({} prefixes, no stale)",
        ids.len(),
        took.iter().min().copied().unwrap_or_default(),
        took.iter().max().copied().unwrap_or_default(),
        final_set.len()
    );
    Ok(())
}

/// BIRD killed and restarted (10 times in CI, 100 with FERROLB_SOAK=1): each time the session
/// comes back and the full set of 50 routes is re-sent; ferrolb's RSS afterwards within 10% of
/// before.
#[test]
fn router_flaps_resend_the_full_set_without_leaking() -> Result<()> {
    if !require(&[Root, Program("bird"), Program("birdc")])? {
        return Ok(());
    }
    let ids: BTreeSet<usize> = (0..50).collect();
    let lab = BgpLab::new("flaps", &services(ids.iter().copied()))?;
    let mut bird = lab.bird()?;
    let speaker = lab.start()?;
    let limit = Duration::from_secs(60);
    let full = |bird: &Bird| {
        let want = desired_prefixes(&lab.dir, &ids);
        want.len() == ids.len() && bird_prefixes(bird) == want
    };
    wait_until(limit, "first full set", || full(&bird))
        .with_context(|| lab.dir.read("node.log"))?;
    let before = speaker.rss_kib()?;
    let flaps = size(10, 100);
    let mut took = Vec::new();
    for k in 0..flaps {
        bird.restart()?;
        let t = Instant::now();
        wait_until(limit, "full set after BIRD restart", || full(&bird))
            .with_context(|| format!("flap {k}\n{}", lab.dir.read("node.log")))?;
        took.push(t.elapsed());
    }
    // Let freed memory settle (tokio tasks finish) before measuring.
    std::thread::sleep(Duration::from_secs(1));
    let after = speaker.rss_kib()?;
    let growth = (after as f64 - before as f64) / before as f64 * 100.0;
    took.sort();
    eprintln!(
        "measured: {flaps} BIRD restarts, 50 routes re-sent each time; routes back after \
         min {:?} median {:?} max {:?}; ferrolb RSS {before} KiB -> {after} KiB ({growth:+.1}%)",
        took[0],
        took[took.len() / 2],
        took[took.len() - 1]
    );
    anyhow::ensure!(growth <= 10.0, "RSS grew {growth:.1}%");
    Ok(())
}
