//! What the page is told: a JSON object per call of its progress function (see
//! `web/static/app.js`), and the fields of an error it classifies by (pure: no JS).

use lamina_core::tar::Segment;
use lamina_core::Error;
use serde_json::{json, Value};

/// A line for the page's log.
pub fn log(message: &str) -> Value {
    json!({"kind": "log", "message": message})
}

/// The job's phase (`base`, `mount`, `manifest`).
pub fn phase(phase: &str) -> Value {
    json!({"kind": "phase", "phase": phase})
}

/// Layer `index` of `files` (`total` bytes of them) starts.
pub fn layer(index: usize, files: &str, total: u64) -> Value {
    json!({"kind": "layer", "index": index, "files": files, "total": total})
}

/// Layer `index` is made and uploaded.
pub fn layer_done(index: usize, digest: &str, size: u64) -> Value {
    json!({"kind": "layerDone", "index": index, "digest": digest, "size": size})
}

/// Files of those picked that are not packed (hidden files, caches), by their names.
pub fn left_out(names: &[String]) -> Value {
    json!({"kind": "leftOut", "files": names})
}

/// `read` of the layer's `total` input bytes were read (and hashed); `files` per file.
pub fn read(read: u64, total: u64, files: Value) -> Value {
    json!({"kind": "read", "read": read, "total": total, "files": files})
}

/// The registry confirmed `confirmed` bytes of the layer.
pub fn upload(confirmed: u64, read: u64, total: u64, files: Value) -> Value {
    json!({"kind": "upload", "confirmed": confirmed, "read": read, "total": total, "files": files})
}

/// File `index` (`name` on the page, at `path` in the artifact) is in the destination as
/// `digest` (`size` bytes); `sent` is false when it was there already and nothing was sent.
pub fn file_done(
    index: usize,
    name: &str,
    path: &str,
    digest: &str,
    size: u64,
    sent: bool,
) -> Value {
    json!({"kind": "fileDone", "index": index, "name": name, "path": path, "digest": digest,
           "size": size, "sent": sent})
}

/// How far each of several files uploading at once has got (a ModelPack's files): bytes read
/// and hashed, bytes the registry confirmed, per file, and one total over them all for the
/// page's bars (the messages are [`read`] and [`upload`] over the sums, with the bar of the
/// file that moved).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// (name on the page, bytes, read, confirmed)
    files: Vec<(String, u64, u64, u64)>,
}

impl Tally {
    /// Files by their names on the page and sizes, none of them begun.
    pub fn new(files: impl IntoIterator<Item = (String, u64)>) -> Tally {
        Tally {
            files: files.into_iter().map(|(n, s)| (n, s, 0, 0)).collect(),
        }
    }

    /// Bytes of all the files.
    pub fn total(&self) -> u64 {
        self.files.iter().map(|f| f.1).sum()
    }

    /// File `i` has `read` bytes read and hashed and `confirmed` in the registry (each at most
    /// the file's size; the registry's count may go back when it lost a session).
    pub fn set(&mut self, i: usize, read: u64, confirmed: u64) {
        if let Some(f) = self.files.get_mut(i) {
            f.2 = read.min(f.1);
            f.3 = confirmed.min(f.1);
        }
    }

    /// File `i` is in the destination, whole.
    pub fn finish(&mut self, i: usize) {
        if let Some(f) = self.files.get_mut(i) {
            f.2 = f.1;
            f.3 = f.1;
        }
    }

    fn bar(&self, i: usize) -> Value {
        Value::Array(
            self.files
                .get(i)
                .map(|(name, size, _, c)| json!({"name": name, "done": c, "size": size}))
                .into_iter()
                .collect(),
        )
    }

    fn read_sum(&self) -> u64 {
        self.files.iter().map(|f| f.2).sum()
    }

    /// The `read` message after file `i` moved.
    pub fn read_msg(&self, i: usize) -> Value {
        read(self.read_sum(), self.total(), self.bar(i))
    }

    /// The `upload` message after the registry confirmed more of file `i`.
    pub fn upload_msg(&self, i: usize) -> Value {
        let confirmed = self.files.iter().map(|f| f.3).sum();
        upload(confirmed, self.read_sum(), self.total(), self.bar(i))
    }
}

/// Where each file's bytes are in the uncompressed tar of `segs` (each with its offset):
/// (name, offset, length), `names` by source index.
pub fn spans(segs: &[(u64, Segment<usize>)], names: &[String]) -> Vec<(String, u64, u64)> {
    segs.iter()
        .filter_map(|(at, sg)| match sg {
            Segment::Content { source, len } => Some((names[*source].clone(), *at, *len)),
            Segment::Bytes(_) => None,
        })
        .collect()
}

/// Files as `{name, done, size}` when the tar has got to `at`.
pub fn per_file(spans: &[(String, u64, u64)], at: u64) -> Value {
    Value::Array(
        spans
            .iter()
            .map(|(name, start, len)| {
                json!({"name": name, "done": at.saturating_sub(*start).min(*len), "size": len})
            })
            .collect(),
    )
}

/// The HTTP status a registry answered, and whether authentication failed, under any retries:
/// what the page classifies an error by, never by its text.
pub fn classify(e: &Error) -> (Option<u16>, bool) {
    let mut e = e;
    while let Error::RetriesExhausted { last, .. } = e {
        e = last;
    }
    match e {
        Error::Http { status, .. } => (Some(*status), false),
        Error::Auth { .. } => (None, true),
        _ => (None, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_core::tar::{plan, EntryKind, PlannedEntry};

    fn placed(files: &[(&str, u64)]) -> Vec<(u64, Segment<usize>)> {
        let entries = plan(
            files
                .iter()
                .enumerate()
                .map(|(i, (p, size))| PlannedEntry {
                    path: format!("src/weights/{p}"),
                    kind: EntryKind::File {
                        size: *size,
                        executable: false,
                    },
                    source: Some(i),
                })
                .collect(),
        )
        .unwrap();
        crate::source::placed(&entries).unwrap()
    }

    #[test]
    fn messages_have_the_shapes_the_page_reads() {
        assert_eq!(log("hi").to_string(), r#"{"kind":"log","message":"hi"}"#);
        assert_eq!(
            phase("base").to_string(),
            r#"{"kind":"phase","phase":"base"}"#
        );
        assert_eq!(
            layer(1, "a b", 9).to_string(),
            r#"{"kind":"layer","index":1,"files":"a b","total":9}"#
        );
        assert_eq!(
            layer_done(0, "sha256:x", 3).to_string(),
            r#"{"kind":"layerDone","index":0,"digest":"sha256:x","size":3}"#
        );
        assert_eq!(
            left_out(&[".git".into()]).to_string(),
            r#"{"kind":"leftOut","files":[".git"]}"#
        );
        assert_eq!(
            read(5, 10, json!([])).to_string(),
            r#"{"kind":"read","read":5,"total":10,"files":[]}"#
        );
        assert_eq!(
            upload(4, 5, 10, json!([])).to_string(),
            r#"{"kind":"upload","confirmed":4,"read":5,"total":10,"files":[]}"#
        );
    }

    #[test]
    fn a_tally_sums_files_uploading_at_once_and_bars_the_one_that_moved() {
        let mut t = Tally::new([
            ("a".to_string(), 10),
            ("b".to_string(), 5),
            ("e".to_string(), 0),
        ]);
        assert_eq!(t.total(), 15);
        assert_eq!(
            t.read_msg(0).to_string(),
            r#"{"kind":"read","read":0,"total":15,"files":[{"name":"a","done":0,"size":10}]}"#
        );
        t.set(0, 8, 4);
        t.set(1, 5, 0);
        assert_eq!(
            t.upload_msg(0).to_string(),
            r#"{"kind":"upload","confirmed":4,"read":13,"total":15,"files":[{"name":"a","done":4,"size":10}]}"#
        );
        // never more than a file; the registry's count may go back (a lost session)
        t.set(1, 99, 99);
        t.set(0, 8, 0);
        assert_eq!(t.upload_msg(1)["confirmed"], 5);
        assert_eq!(t.upload_msg(1)["read"], 13);
        t.finish(0);
        t.finish(2);
        assert_eq!(t.upload_msg(0)["confirmed"], 15);
        assert_eq!(
            t.read_msg(2)["files"][0],
            json!({"name": "e", "done": 0, "size": 0})
        );
        // an index that is no file's changes nothing and bars nothing
        t.set(7, 1, 1);
        assert_eq!(t.read_msg(7)["files"], json!([]));
        assert_eq!(t.read_msg(7)["read"], 15);
        assert_eq!(
            file_done(1, "m/b", "b", "sha256:x", 5, false).to_string(),
            r#"{"kind":"fileDone","index":1,"name":"m/b","path":"b","digest":"sha256:x","size":5,"sent":false}"#
        );
    }

    #[test]
    fn segments_are_placed_back_to_back_and_files_spanned_in_them() {
        let segs = placed(&[("model.bin", 1000), ("config.json", 15), ("empty", 0)]);
        // each segment starts where the one before ends; the layer is whole 512-byte blocks
        let mut at = 0;
        for (off, sg) in &segs {
            assert_eq!(*off, at);
            at += sg.len();
        }
        assert_eq!(at % 512, 0);
        let names: Vec<String> = ["model.bin", "config.json", "empty"]
            .map(String::from)
            .to_vec();
        let sp = spans(&segs, &names);
        let files: Vec<(&str, u64)> = sp.iter().map(|(n, _, l)| (n.as_str(), *l)).collect();
        assert!(files.contains(&("model.bin", 1000)) && files.contains(&("config.json", 15)));
        assert!(sp.iter().all(|(_, s, l)| s % 512 == 0 && s + l <= at));
        // the bars: nothing, part of the first file, everything
        let (m0, ml) = sp
            .iter()
            .find(|s| s.0 == "model.bin")
            .map(|s| (s.1, s.2))
            .unwrap();
        let done = |at: u64| -> Vec<u64> {
            per_file(&sp, at)
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["done"].as_u64().unwrap())
                .collect()
        };
        assert!(done(0).iter().all(|d| *d == 0));
        let i = sp.iter().position(|s| s.0 == "model.bin").unwrap();
        assert_eq!(done(m0 + 10)[i], 10);
        assert_eq!(done(m0 + ml + 5000)[i], ml, "never more than the file");
        let full: Vec<u64> = sp.iter().map(|s| s.2).collect();
        assert_eq!(done(u64::MAX), full);
        assert_eq!(per_file(&sp, 0)[i]["name"], "model.bin");
        assert_eq!(per_file(&sp, 0)[i]["size"], 1000);
    }

    #[test]
    fn errors_are_classified_by_status_and_auth_under_retries() {
        let http = |status| Error::Http {
            method: "GET".into(),
            url: "http://r/v2/".into(),
            status,
            detail: String::new(),
        };
        assert_eq!(classify(&http(404)), (Some(404), false));
        let retried = Error::RetriesExhausted {
            attempts: 5,
            last: Box::new(http(503)),
        };
        assert_eq!(classify(&retried), (Some(503), false));
        let auth = Error::Auth {
            registry: "r".into(),
            reason: "refused".into(),
        };
        assert_eq!(classify(&auth), (None, true));
        assert_eq!(classify(&Error::internal("x")), (None, false));
    }
}
