//! What the mirror side reads from the failover side's [`ClusterView`]:
//! who may push each group to this node ([`ViewHolders`], the receiver's
//! lock) and which link to mirror over ([`Link::choose`]). Pure logic
//! behind a lock: no tokio, no sockets, no clock. Must not depend on the
//! scan, transfer or apply code.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::daemon::{ClusterView, PeerView};
use crate::sync::Holders;

/// Who may push a group, as the receiver checks it.
///
/// * a holder (or a node starting or stopping the group) at the view's
///   epoch: that node;
/// * nobody holds the group now: the last holder this node saw, at the
///   epoch it held it with — its last changes (sent after its stop hooks)
///   are still the newest data until someone takes the group with a higher
///   epoch;
/// * no view yet (the daemon has not published one): nobody (`None`), so
///   nothing is accepted before the failover side has spoken.
#[derive(Debug, Default)]
pub struct ViewHolders {
    inner: RwLock<Known>,
}

#[derive(Debug, Default)]
struct Known {
    /// group → (holder, epoch) of the latest view; holder `None` when nobody holds it.
    now: HashMap<String, (Option<String>, u64)>,
    /// group → the last node seen holding it, and its epoch then.
    last: HashMap<String, (String, u64)>,
}

/// The name a refusal shows when nobody ever held a group.
pub const NOBODY: &str = "(nobody)";

impl ViewHolders {
    pub fn new() -> Arc<ViewHolders> {
        Arc::new(ViewHolders::default())
    }

    /// Takes in a new view (cheap: a lock and a few strings).
    pub fn update(&self, view: &ClusterView) {
        let mut k = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for g in &view.groups {
            if let Some(h) = &g.holder {
                k.last.insert(g.group.clone(), (h.clone(), g.epoch));
            }
            k.now.insert(g.group.clone(), (g.holder.clone(), g.epoch));
        }
    }
}

impl Holders for ViewHolders {
    fn holder(&self, group: &str) -> Option<(String, u64)> {
        let k = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let (holder, epoch) = k.now.get(group)?;
        match holder {
            Some(h) => Some((h.clone(), *epoch)),
            None => match k.last.get(group) {
                Some((h, e)) => Some((h.clone(), (*e).max(*epoch))),
                None => Some((NOBODY.to_string(), *epoch)),
            },
        }
    }
}

/// The link the mirror connects over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The crossover address only.
    Crossover,
    /// The LAN address only (the crossover is down, the LAN is up).
    Lan,
    /// Crossover first, then the LAN (nothing is known: the peer is not
    /// heard on any link).
    Any,
}

impl Link {
    /// The crossover while the peer is heard on it; the LAN while only the
    /// LAN is; otherwise both in turn. `links` is crossover first (as
    /// `PeerView::links`).
    pub fn choose(peer: &PeerView) -> Link {
        let up = |i: usize| peer.links.get(i).is_some_and(|l| l.up);
        if up(0) {
            Link::Crossover
        } else if up(1) {
            Link::Lan
        } else {
            Link::Any
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Link::Crossover => "crossover",
            Link::Lan => "lan",
            Link::Any => "any",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{GroupView, LinkView};

    fn view(holder: Option<&str>, epoch: u64, links: [bool; 2]) -> ClusterView {
        ClusterView {
            local: "serv2".into(),
            peers: vec![PeerView {
                name: "serv1".into(),
                alive: links.iter().any(|u| *u),
                links: ["crossover", "lan"]
                    .iter()
                    .zip(links)
                    .map(|(n, up)| LinkView {
                        name: n.to_string(),
                        up,
                    })
                    .collect(),
            }],
            groups: vec![GroupView {
                group: "serv1".into(),
                owner: "serv1".into(),
                holder: holder.map(str::to_string),
                epoch,
                here: "released".into(),
                sets: vec!["Fsmbd".into()],
            }],
        }
    }

    fn view_peer(v: &ClusterView) -> &PeerView {
        v.peer().expect("one peer")
    }

    #[test]
    fn nothing_is_accepted_before_the_first_view() {
        let h = ViewHolders::new();
        assert_eq!(h.holder("serv1"), None);
    }

    #[test]
    fn the_holder_and_epoch_follow_the_view_and_the_last_holder_keeps_its_epoch_while_nobody_holds() {
        let h = ViewHolders::new();
        h.update(&view(None, 1, [true, true]));
        assert_eq!(h.holder("serv1"), Some((NOBODY.into(), 1)));
        h.update(&view(Some("serv1"), 3, [true, true]));
        assert_eq!(h.holder("serv1"), Some(("serv1".into(), 3)));
        // serv1 released (its stop hooks ran): its last push is still welcome.
        h.update(&view(None, 3, [true, true]));
        assert_eq!(h.holder("serv1"), Some(("serv1".into(), 3)));
        // serv2 took it with a higher epoch: serv1 is refused.
        h.update(&view(Some("serv2"), 4, [true, true]));
        assert_eq!(h.holder("serv1"), Some(("serv2".into(), 4)));
        assert_eq!(h.holder("other"), None);
    }

    #[test]
    fn the_mirror_uses_the_crossover_then_the_lan_then_either() {
        assert_eq!(Link::choose(view_peer(&view(None, 1, [true, true]))), Link::Crossover);
        assert_eq!(Link::choose(view_peer(&view(None, 1, [true, false]))), Link::Crossover);
        assert_eq!(Link::choose(view_peer(&view(None, 1, [false, true]))), Link::Lan);
        assert_eq!(Link::choose(view_peer(&view(None, 1, [false, false]))), Link::Any);
    }
}
