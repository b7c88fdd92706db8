//! Webhook bodies, signatures and the `REGISTRY_AUTH` secret.
//!
//! Entry points: `hook::Job::parse` (and `registries`, `kind`), `hook::registry_auth`,
//! `hook::verify`, `hook::sign`, `hook::job_id`, `hook::is_job_id`.
//! Input: byte 0 picks the hook kind and the clock; the rest is the body. For `verify` the body is
//! also cut at newlines into a signature, a timestamp and the signed body.
//! Invariants: what `sign` makes `verify` accepts at the same time; a job's references parse;
//! `job_id` makes ids `is_job_id` accepts; `registry_auth` errors never quote a value.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lamina_core::hook::{
    is_job_id, job_id, registry_auth, sign, verify, Job, Refusal, TOLERANCE_SECS,
};
use lamina_core::reference::Reference;

const KINDS: [&str; 4] = ["affix", "remix", "zstd", "other"];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(sel) % KINDS.len()];
    let default = "r8.im";
    if let Ok(job) = Job::parse(kind, body, default) {
        assert_eq!(job.kind(), kind);
        let regs = job.registries(default);
        assert!(!regs.is_empty());
        for r in &regs {
            assert!(Reference::parse(&format!("{r}/x"), default).is_ok(), "{r}");
        }
    }

    let text = String::from_utf8_lossy(body);
    match registry_auth(&text) {
        Ok(hosts) => {
            for (h, _) in hosts {
                assert_eq!(h, h.to_ascii_lowercase());
            }
        }
        Err(e) => assert!(e.starts_with("REGISTRY_AUTH"), "{e}"),
    }

    let mut parts = text.splitn(3, '\n');
    let (sig, ts, signed) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let now = u64::from(sel) * 1_000_003;
    let secret = b"s3cret";
    match verify(secret, Some(sig), Some(ts), signed.as_bytes(), now) {
        Ok(()) => panic!("the fuzzer forged a signature: {sig:?}"),
        Err(Refusal::Stale(off)) => assert!(off > TOLERANCE_SECS),
        Err(_) => {}
    }
    let good = sign(secret, now, signed.as_bytes());
    let ts_s = now.to_string();
    assert_eq!(
        verify(secret, Some(&good), Some(&ts_s), signed.as_bytes(), now),
        Ok(())
    );
    assert!(is_job_id(&job_id(sig)));
    assert_eq!(job_id(sig), job_id(&format!(" {sig} ")));
});
