//! A request's way through the router: what its headers ask of the routing ([`Wants`]),
//! admission against the model's in-flight bound, the pick and the run (again, once, when
//! a routing swap retired the version picked), and the stable version's answer shared
//! with the shadow's mirror and the model's sample.

use super::error::ApiError;
use super::served::Served;
use crate::router::{self, CallError, Copy, Hint, ModelInfo, ModelRoute, Pool, RouteError};
use crate::tensor::Tensor;
use std::sync::Arc;

/// Header asking for one version, as a path's `/versions/{v}` does.
pub const VERSION_HEADER: &str = "x-modeld-version";
/// Header asking for the candidate (`canary: true`), as the protocol's Istio rule does.
pub const CANARY_HEADER: &str = "canary";

/// What a request's headers (and URL) ask of the routing.
pub(super) struct Wants {
    version: Option<u64>,
    canary: bool,
    sticky_key: Option<String>,
}

impl Wants {
    pub(super) fn of(
        headers: &hyper::HeaderMap,
        path_version: Option<u64>,
        route: &ModelRoute,
    ) -> Result<Wants, ApiError> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let header_version = match text(VERSION_HEADER) {
            None => None,
            Some(v) => Some(crate::repo::parse_version(v).ok_or_else(|| {
                ApiError::bad_request(format!("{VERSION_HEADER}: '{v}' is not a version (a positive integer)"))
            })?),
        };
        let version = match (path_version, header_version) {
            (Some(p), Some(h)) if p != h => {
                return Err(ApiError::bad_request(format!(
                    "the URL asks for version {p} but {VERSION_HEADER} for {h}"
                )));
            }
            (p, h) => p.or(h),
        };
        let canary = text(CANARY_HEADER).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let sticky_key = route.sticky_header().and_then(|h| text(&h).map(String::from));
        Ok(Wants { version, canary, sticky_key })
    }

    fn hint(&self) -> Hint<'_> {
        Hint { version: self.version, canary: self.canary, sticky_key: self.sticky_key.as_deref() }
    }
}

/// Admits a request against the model's in-flight bound; a refusal is counted against
/// the version it would have gone to.
pub(super) fn admit(route: &ModelRoute, wants: &Wants, served: &mut Served) -> Result<router::Admission, ApiError> {
    route.admit().map_err(|e| {
        if let Ok(pool) = route.pick(&wants.hint()) {
            served.on(&pool);
        }
        e.into()
    })
}

/// A request that ran: where, with which signature, and what came out.
pub(super) struct Ran {
    pub(super) pool: Arc<Pool>,
    pub(super) info: Arc<ModelInfo>,
    pub(super) outputs: Vec<Tensor>,
}

/// Picks the pool, waits for its signature (while it starts), builds the inputs against
/// it and runs them. A pool retired by a routing swap between the pick and the run is
/// not the request's problem: it is picked again from the new table, once.
pub(super) async fn run(
    route: &ModelRoute,
    wants: &Wants,
    served: &mut Served,
    mut inputs_for: impl FnMut(&ModelInfo, Option<Vec<Tensor>>) -> Result<Vec<Tensor>, ApiError>,
) -> Result<Ran, ApiError> {
    let mut attempts = 0;
    // The inputs of an attempt whose version retired, handed to the next one.
    let mut retried = None;
    loop {
        attempts += 1;
        let pool = route.pick(&wants.hint())?;
        served.on(&pool);
        let waiting = std::time::Instant::now();
        let info = pool.wait_info().await;
        served.waited_for_start += waiting.elapsed();
        let outcome = match info {
            Ok(info) => {
                let inputs = inputs_for(&info, retried.take())?;
                match router::infer(&pool, &inputs).await {
                    Ok((outputs, timing)) => Ok((info, inputs, outputs, timing)),
                    Err(e) => {
                        retried = Some(inputs);
                        Err(e)
                    }
                }
            }
            Err(e) => Err(router::pool_error(&pool, e)),
        };
        match outcome {
            Ok((info, inputs, outputs, timing)) => {
                served.timing = Some(timing);
                pool.tap(&outputs);
                share_answer(route, &pool, inputs, &outputs, timing, served);
                return Ok(Ran { pool, info, outputs });
            }
            Err(RouteError::Retired { .. }) if attempts < 2 => continue,
            Err(e) => {
                if let RouteError::Call(CallError::Failed { fault, .. }) = &e
                    && fault.output().is_some()
                {
                    served.wrong = Some(fault.clone());
                }
                return Err(e.into());
            }
        }
    }
}

/// Hands what the stable version answered to whoever judges a rollout with it: a copy to
/// the shadow's mirror (dropped when the stable version is saturated, so mirroring never
/// slows live requests), and now and then a copy to the model's sample of live requests.
fn share_answer(
    route: &ModelRoute,
    pool: &Arc<Pool>,
    mut inputs: Vec<Tensor>,
    outputs: &[Tensor],
    timing: crate::router::Timing,
    served: &mut Served,
) {
    if !route.is_stable(pool) {
        return;
    }
    let mirror = route.mirror_for(pool);
    if route.sample.wants() {
        let kept = match mirror {
            Some(_) => inputs.clone(),
            None => std::mem::take(&mut inputs),
        };
        route.sample.keep(kept, outputs.to_vec(), pool.version);
    }
    if let Some(mirror) = mirror {
        let queued = mirror.offer(pool.is_saturated(), || Copy { inputs, answer: outputs.to_vec(), stable: timing });
        served.mirrored = Some((mirror.pool.version, queued));
    }
}
