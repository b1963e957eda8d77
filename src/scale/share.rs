//! Sharing the host's budget among the autoscaled models: each keeps its `min`; what is
//! left goes one worker at a time to the model under the most pressure (its proposal per
//! worker granted so far), up to what it decided; a worker that would not fit the cores
//! or the memory left is refused with the reason. A model that decided on fewer workers
//! than it runs gives them back at once; one kept up only by its down window gives them
//! back when another model needs the room.

/// One model's claim on the budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub model: String,
    pub min: usize,
    /// What its decision asks for (after its windows and policies).
    pub desired: usize,
    /// What its load alone asks for now (the pressure: proposal per granted worker).
    pub proposal: usize,
    /// What it runs now.
    pub current: usize,
    /// Cores one of its workers holds.
    pub cores: usize,
    /// Memory one of its workers holds: its `memory_limit`, else the largest measured.
    pub memory: u64,
}

/// What a claim was granted.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub workers: usize,
    /// Why it got fewer than it decided, if it did.
    pub limited: Option<String>,
}

/// What the claims may share: the budget less what other workers hold (fixed models,
/// rollouts' candidates, versions kept warm), and the host's free memory for growth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Room {
    pub cores: usize,
    pub memory: u64,
    /// Memory the host has free now: workers added must fit in it too.
    pub free: u64,
}

pub fn share(claims: &[Claim], room: Room) -> Vec<Grant> {
    let mut granted: Vec<usize> = claims.iter().map(|c| c.min).collect();
    let mut limited: Vec<Option<String>> = vec![None; claims.len()];
    let mut cores = room.cores.saturating_sub(claims.iter().map(|c| c.min * c.cores).sum());
    let mut memory = room.memory.saturating_sub(claims.iter().map(|c| c.min as u64 * c.memory).sum());
    let mut free = room.free;
    let mut open: Vec<usize> = (0..claims.len()).filter(|&i| claims[i].desired > granted[i]).collect();
    while !open.is_empty() {
        // The most pressed: the highest proposal per worker granted (ties: the first).
        let (at, &i) = open
            .iter()
            .enumerate()
            .max_by(|(_, a), (_, b)| {
                let (a, b) = (**a, **b);
                pressure(&claims[a], granted[a]).total_cmp(&pressure(&claims[b], granted[b])).then(b.cmp(&a))
            })
            .expect("open is not empty");
        let claim = &claims[i];
        // Workers it runs already hold host memory; only new ones need free memory.
        let grows = granted[i] >= claim.current;
        let refusal = if claim.cores > cores {
            Some(format!(
                "needs {} more core(s) for worker {}, the budget has {cores} left",
                claim.cores,
                granted[i] + 1
            ))
        } else if claim.memory > memory {
            Some(format!(
                "needs {} MiB more memory for worker {}, the budget has {} MiB left",
                claim.memory >> 20,
                granted[i] + 1,
                memory >> 20
            ))
        } else if grows && claim.memory > free {
            Some(format!(
                "needs {} MiB for worker {}, the host has {} MiB free",
                claim.memory >> 20,
                granted[i] + 1,
                free >> 20
            ))
        } else {
            None
        };
        match refusal {
            Some(why) => {
                limited[i] = Some(format!("held at {} of {}: {why}", granted[i], claim.desired));
                open.swap_remove(at);
            }
            None => {
                granted[i] += 1;
                cores -= claim.cores;
                memory -= claim.memory;
                if grows {
                    free -= claim.memory;
                }
                if granted[i] >= claim.desired {
                    open.swap_remove(at);
                }
            }
        }
    }
    granted.into_iter().zip(limited).map(|(workers, limited)| Grant { workers, limited }).collect()
}

fn pressure(claim: &Claim, granted: usize) -> f64 {
    claim.proposal as f64 / granted.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(model: &str, min: usize, desired: usize, proposal: usize, current: usize) -> Claim {
        Claim { model: model.into(), min, desired, proposal, current, cores: 1, memory: 100 << 20 }
    }

    const PLENTY: Room = Room { cores: 64, memory: 1 << 40, free: 1 << 40 };

    #[test]
    fn with_room_enough_every_model_gets_what_it_decided() {
        let grants = share(&[claim("a", 1, 4, 4, 1), claim("b", 2, 2, 1, 3)], PLENTY);
        assert_eq!(grants.iter().map(|g| g.workers).collect::<Vec<_>>(), vec![4, 2]);
        assert!(grants.iter().all(|g| g.limited.is_none()));
    }

    #[test]
    fn competing_models_keep_their_min_and_share_the_rest_by_pressure() {
        // 6 cores: a (busy, asks 6) and b (quiet, held at 4 by its down window).
        let room = Room { cores: 6, ..PLENTY };
        let grants = share(&[claim("a", 1, 6, 6, 1), claim("b", 1, 4, 1, 4)], room);
        // b keeps its min plus what a's pressure leaves: a gets 5 cores (pressure 6/n > 1/1).
        assert_eq!((grants[0].workers, grants[1].workers), (5, 1));
        assert!(grants[0].limited.as_deref().is_some_and(|l| l.contains("held at 5 of 6")), "{grants:?}");
        assert!(grants[1].limited.as_deref().is_some_and(|l| l.contains("held at 1 of 4")), "{grants:?}");
        // Two equally busy models split evenly.
        let grants = share(&[claim("a", 1, 8, 8, 1), claim("b", 1, 8, 8, 1)], room);
        assert_eq!((grants[0].workers, grants[1].workers), (3, 3));
    }

    #[test]
    fn memory_refuses_a_worker_that_would_not_fit_with_the_reason() {
        let room = Room { cores: 64, memory: 350 << 20, free: 1 << 40 };
        let grants = share(&[claim("a", 1, 4, 4, 1)], room);
        assert_eq!(grants[0].workers, 3);
        let why = grants[0].limited.clone().unwrap();
        assert!(why.contains("needs 100 MiB more memory for worker 4, the budget has 50 MiB left"), "{why}");
        // The host's free memory bounds new workers only: running ones already hold theirs.
        let room = Room { cores: 64, memory: 1 << 40, free: 150 << 20 };
        let grants = share(&[claim("a", 1, 5, 5, 2)], room);
        assert_eq!(grants[0].workers, 3);
        assert!(grants[0].limited.as_deref().unwrap().contains("the host has 50 MiB free"), "{grants:?}");
    }
}
