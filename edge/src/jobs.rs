//! Signed hooks and the jobs they start.
//!
//! `POST /hooks/affix|remix|zstd|pack|convert` is checked (HMAC-SHA256 of `"{timestamp}.{body}"` with the
//! `HOOK_SECRET` secret, in constant time; the timestamp within 5 minutes), parsed, and handed
//! to a Durable Object named after the request's signature ([`job_id`]). The object keeps the
//! job's status in its storage and runs the job from an alarm, so a job outlives the request
//! that started it (alarms may run 15 minutes; a request is cut when its caller goes away).
//! The same signed request sent again names the same object, which refuses it: a replay. The
//! hook waits up to `SYNC_WAIT_MS` (or `?wait=MS`, less) for the job: `200` with the image when it finished, `422`
//! when it failed, else `202` with the job's URL; `GET /jobs/ID` reports it.
//!
//! Registry credentials come only from the `REGISTRY_AUTH` secret, per host; a hook body cannot
//! carry any.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use lamina_core::auth::Credentials;
use lamina_core::hook::{self, job_id, Job};
use lamina_core::image::rfc3339;
use serde::{Deserialize, Serialize};
use worker::{
    durable_object, Delay, DurableObject, Env, Method, Request, RequestInit, Response, Result,
    State, Storage,
};

use crate::driver::{now_ms, wasm_memory, Driver, Progress};
use crate::work::{self, Ctx, DEFAULT_REGISTRY};
use crate::{refuse, Config};

/// How long a finished job's status is kept.
const KEEP_MS: i64 = 24 * 3600 * 1000;
/// Lines of a job's log kept in its status.
const LOG_LINES: usize = 50;
/// How often progress is written to storage.
const SAVE_EVERY_MS: f64 = 1000.0;
/// Times an interrupted job (its isolate gone mid-run) is started again.
const MAX_RUNS: u32 = 3;

/// A job's status, as `GET /jobs/ID` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Status {
    /// The job's id.
    pub id: String,
    /// `affix`, `remix`, `zstd`, `pack` or `convert`.
    pub kind: String,
    /// `queued`, `running`, `done` or `failed`.
    pub status: String,
    /// The pushed image or artifact (`name@sha256:...`), when done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// What went wrong, when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes of the current blob the registry confirmed.
    pub sent: u64,
    /// Input bytes read.
    pub read: u64,
    /// The WebAssembly memory of the isolate running the job, MiB (its peak so far).
    pub wasm_mib: u64,
    /// What it did.
    pub log: Vec<String>,
    /// Unix ms.
    pub created_ms: u64,
    /// Unix ms.
    pub updated_ms: u64,
    /// Times started.
    pub runs: u32,
}

/// What the hook hands the object.
#[derive(Debug, Serialize, Deserialize)]
struct Start {
    id: String,
    kind: String,
    body: String,
}

/// How long (ms) a hook waits for its job: `SYNC_WAIT_MS` (`most`, 20 s unless set), or less
/// when the request asks (`?wait=MS`; 0 answers 202 at once).
fn hook_wait(most: Option<&str>, asked: Option<&str>) -> f64 {
    let most = most.and_then(|v| v.parse::<f64>().ok()).unwrap_or(20_000.0);
    let asked = asked.and_then(|v| v.parse::<f64>().ok());
    asked.map_or(most, |a| a.clamp(0.0, most))
}

/// The PATCH size of a job's uploads from `CHUNK_MIB` (16 MiB unless set; 1 to 90 MiB: two
/// chunks are held at a time, and a Worker's requests take at most 100 MB).
fn chunk_bytes(mib: Option<&str>) -> u64 {
    mib.and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(16)
        .clamp(1, 90)
        << 20
}

fn json_response(v: &impl Serialize, status: u16) -> Result<Response> {
    Ok(Response::from_json(v)?.with_status(status))
}

/// Registry credentials per host from `REGISTRY_AUTH` (JSON: `{"host[:port]": {"username",
/// "password"} | {"token"} | {"cog_token"}}`).
pub(crate) fn registry_creds(
    env: &Env,
) -> std::result::Result<HashMap<String, Credentials>, String> {
    let raw = env
        .secret("REGISTRY_AUTH")
        .map(|s| s.to_string())
        .or_else(|_| env.var("REGISTRY_AUTH").map(|v| v.to_string()))
        .unwrap_or_default();
    Ok(hook::registry_auth(&raw)?.into_iter().collect())
}

/// `POST /hooks/<kind>`.
pub async fn hook(mut req: Request, env: &Env, cfg: &Config, kind: &str) -> Result<Response> {
    if req.method() != Method::Post {
        return refuse(405, "hooks are POST");
    }
    let Ok(secret) = env.secret("HOOK_SECRET").map(|s| s.to_string()) else {
        return refuse(
            503,
            "hooks are off: set the HOOK_SECRET secret (wrangler secret put HOOK_SECRET)",
        );
    };
    if secret.len() < 16 {
        return refuse(503, "HOOK_SECRET is shorter than 16 bytes: hooks are off");
    }
    let declared: Option<usize> = req
        .headers()
        .get("content-length")?
        .and_then(|v| v.parse().ok());
    if declared.is_some_and(|n| n > hook::MAX_BODY) {
        return refuse(
            413,
            &format!("a hook body is at most {} bytes", hook::MAX_BODY),
        );
    }
    let body = req.bytes().await?;
    if body.len() > hook::MAX_BODY {
        return refuse(
            413,
            &format!("a hook body is at most {} bytes", hook::MAX_BODY),
        );
    }
    let sig = req.headers().get(hook::SIGNATURE_HEADER)?;
    let ts = req.headers().get(hook::TIMESTAMP_HEADER)?;
    let now = (now_ms() / 1000.0) as u64;
    if let Err(r) = hook::verify(secret.as_bytes(), sig.as_deref(), ts.as_deref(), &body, now) {
        return refuse(401, &r.to_string());
    }
    let sig = sig.unwrap_or_default();
    let job = match Job::parse(kind, &body, DEFAULT_REGISTRY) {
        Ok(j) => j,
        Err(e) => return refuse(400, &e.to_string()),
    };
    for r in job.registries(DEFAULT_REGISTRY) {
        if !cfg.registries.contains(&r.to_ascii_lowercase()) {
            return refuse(
                403,
                &format!("registry {r} is not on this Worker's allow list (ALLOWED_REGISTRIES)"),
            );
        }
    }
    if let Err(e) = registry_creds(env) {
        return refuse(500, &e);
    }
    let id = job_id(&sig);
    let stub = env.durable_object("JOBS")?.id_from_name(&id)?.get_stub()?;
    let start = Start {
        id: id.clone(),
        kind: job.kind().into(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(serde_json::to_string(&start)?.into()));
    let r = stub
        .fetch_with_request(Request::new_with_init("https://job/start", &init)?)
        .await?;
    if r.status_code() == 409 {
        return refuse(
            409,
            &format!("replayed: this signed request already started job {id}; sign a new one"),
        );
    }
    if r.status_code() != 202 {
        return refuse(500, &format!("job {id} did not start"));
    }
    // wait a while for the job, so short ones answer with their result
    // (`?wait=MS` asks for less: 0 answers 202 at once)
    let most = env.var("SYNC_WAIT_MS").ok().map(|v| v.to_string());
    let url = req.url()?;
    let asked = url.query_pairs().find(|(k, _)| k == "wait").map(|(_, v)| v);
    let until = now_ms() + hook_wait(most.as_deref(), asked.as_deref());
    loop {
        let st = status(env, &id).await?;
        match st.as_ref().map(|s| s.status.as_str()) {
            Some("done") => return json_response(&st, 200),
            Some("failed") => return json_response(&st, 422),
            _ if now_ms() >= until => {
                let mut resp = json_response(
                    &serde_json::json!({"id": id, "status": st.map(|s| s.status), "poll": format!("/jobs/{id}")}),
                    202,
                )?;
                resp.headers_mut().set("location", &format!("/jobs/{id}"))?;
                return Ok(resp);
            }
            _ => Delay::from(Duration::from_millis(250)).await,
        }
    }
}

async fn status(env: &Env, id: &str) -> Result<Option<Status>> {
    let stub = env.durable_object("JOBS")?.id_from_name(id)?.get_stub()?;
    let mut r = stub.fetch_with_str("https://job/status").await?;
    if r.status_code() != 200 {
        return Ok(None);
    }
    Ok(Some(r.json().await?))
}

/// `GET /jobs/<id>`.
pub async fn job_status(env: &Env, id: &str) -> Result<Response> {
    if !hook::is_job_id(id) {
        return refuse(404, "no such job (a job id is 32 hex digits)");
    }
    match status(env, id).await? {
        Some(s) => json_response(&s, 200),
        None => refuse(404, &format!("no job {id} (or it finished over a day ago)")),
    }
}

/// One Durable Object per job: its status in storage, the job run from an alarm.
// (State and Env have no Debug)
#[allow(missing_debug_implementations)]
#[durable_object(alarm)]
pub struct LaminaJob {
    state: State,
    env: Env,
}

impl DurableObject for LaminaJob {
    fn new(state: State, env: Env) -> Self {
        LaminaJob { state, env }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let st = self.state.storage();
        let path = req.path();
        match (req.method(), path.as_str()) {
            (Method::Post, "/start") => {
                let s: Start = req.json().await?;
                // the one place replays stop: this object exists once per signature
                if st.get::<Status>("status").await?.is_some() {
                    return Response::error("replayed", 409);
                }
                let now = now_ms() as u64;
                let status = Status {
                    id: s.id.clone(),
                    kind: s.kind.clone(),
                    status: "queued".into(),
                    created_ms: now,
                    updated_ms: now,
                    ..Status::default()
                };
                st.put("status", &status).await?;
                st.put("start", &s).await?;
                st.set_alarm(0i64).await?;
                Response::empty().map(|r| r.with_status(202))
            }
            (Method::Get, "/status") => match st.get::<Status>("status").await? {
                Some(s) => Response::from_json(&s),
                None => Response::error("no such job", 404),
            },
            _ => Response::error("not found", 404),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let st = self.state.storage();
        let Some(mut status) = st.get::<Status>("status").await? else {
            return Response::empty();
        };
        match status.status.as_str() {
            "done" | "failed" => {
                // kept for a day, then gone (a replay after that is refused by its timestamp)
                st.delete_all().await?;
                return Response::empty();
            }
            "running" if status.runs >= MAX_RUNS => {
                status.status = "failed".into();
                status.error = Some(format!(
                    "interrupted {} times (the Worker's isolate went away mid-job)",
                    status.runs
                ));
                return self.finish(status).await;
            }
            _ => {}
        }
        let Some(start) = st.get::<Start>("start").await? else {
            status.status = "failed".into();
            status.error = Some("the job's request is missing".into());
            return self.finish(status).await;
        };
        status.status = "running".into();
        status.runs += 1;
        status.updated_ms = now_ms() as u64;
        st.put("status", &status).await?;
        let rec = Recorder {
            storage: self.state.storage(),
            status: RefCell::new(status),
            saved: Cell::new(0.0),
        };
        let outcome = self.run(&start, &rec).await;
        let mut status = rec.status.into_inner();
        match outcome {
            Ok(image) => {
                status.status = "done".into();
                status.image = Some(image);
            }
            Err(e) => {
                status.status = "failed".into();
                status.error = Some(e);
            }
        }
        self.finish(status).await
    }
}

impl LaminaJob {
    async fn run(&self, start: &Start, rec: &Recorder) -> std::result::Result<String, String> {
        let job = Job::parse(&start.kind, start.body.as_bytes(), DEFAULT_REGISTRY)
            .map_err(|e| e.to_string())?;
        let creds = registry_creds(&self.env)?;
        let chunk_mib = self.env.var("CHUNK_MIB").ok().map(|v| v.to_string());
        let mut ctx = Ctx {
            d: Driver::new(creds),
            chunk: chunk_bytes(chunk_mib.as_deref()),
            created: rfc3339((now_ms() / 1000.0) as u64),
        };
        work::run(&mut ctx, &job, rec)
            .await
            .map_err(|f| f.to_string())
    }

    async fn finish(&self, mut status: Status) -> Result<Response> {
        status.updated_ms = now_ms() as u64;
        let st = self.state.storage();
        st.put("status", &status).await?;
        st.set_alarm(KEEP_MS).await?;
        Response::empty()
    }
}

/// Writes a running job's progress to its storage (at most once a second).
struct Recorder {
    storage: Storage,
    status: RefCell<Status>,
    saved: Cell<f64>,
}

impl Recorder {
    async fn save(&self, force: bool) {
        let now = now_ms();
        if !force && now - self.saved.get() < SAVE_EVERY_MS {
            return;
        }
        self.saved.set(now);
        let s = {
            let mut s = self.status.borrow_mut();
            s.updated_ms = now as u64;
            s.clone()
        };
        let _ = self.storage.put("status", &s).await;
    }
}

impl Progress for Recorder {
    async fn bytes(&self, sent: u64, read: u64) {
        {
            let mut s = self.status.borrow_mut();
            s.sent = sent;
            s.read = read;
            s.wasm_mib = wasm_memory() >> 20;
        }
        self.save(false).await;
    }
    async fn log(&self, line: &str) {
        {
            let mut s = self.status.borrow_mut();
            s.log.push(line.to_string());
            if s.log.len() > LOG_LINES {
                s.log.remove(0);
            }
        }
        self.save(true).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_waits_as_long_as_asked_within_the_setting() {
        assert_eq!(hook_wait(None, None), 20_000.0);
        assert_eq!(hook_wait(Some("5000"), None), 5000.0);
        assert_eq!(hook_wait(Some("5000"), Some("0")), 0.0);
        assert_eq!(hook_wait(Some("5000"), Some("100")), 100.0);
        assert_eq!(
            hook_wait(Some("5000"), Some("60000")),
            5000.0,
            "at most the setting"
        );
        assert_eq!(hook_wait(Some("5000"), Some("-3")), 0.0);
        assert_eq!(hook_wait(Some("soon"), Some("later")), 20_000.0);
    }

    #[test]
    fn chunks_are_1_to_90_mib() {
        assert_eq!(chunk_bytes(None), 16 << 20);
        assert_eq!(chunk_bytes(Some("32")), 32 << 20);
        assert_eq!(chunk_bytes(Some("0")), 1 << 20);
        assert_eq!(chunk_bytes(Some("500")), 90 << 20);
        assert_eq!(chunk_bytes(Some("x")), 16 << 20);
    }
}
