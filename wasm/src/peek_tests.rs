//! The runner of reads inside an image, natively: a fake registry that serves a manifest, its
//! config and an uncompressed tar layer by `Range` (or ignores `Range`).

use std::cell::{Cell, RefCell};

use lamina_core::http::{Request, Response};
use lamina_core::image::Descriptor;
use lamina_core::reference::Reference;
use lamina_core::registry::NetError;
use lamina_core::tar::{EntryKind, TarWriter};
use lamina_core::{Digest, Error};
use serde_json::json;

use crate::flow::Side;
use crate::peek::{self, Body, Streams};
use crate::{block_on, Driver, Failure, Transport};

struct Registry {
    manifest: Vec<u8>,
    config: (Digest, Vec<u8>),
    layer: (Digest, Vec<u8>),
    ignores_range: bool,
    ranges: Cell<u32>,
    streams: RefCell<Vec<String>>,
}

fn safetensors() -> Vec<u8> {
    let hdr = br#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[4,8],"data_offsets":[0,64]}}"#;
    let mut f = (hdr.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(hdr);
    f.extend_from_slice(&[7u8; 64]);
    f
}

impl Registry {
    fn new(ignores_range: bool) -> Registry {
        let mut tar = Vec::new();
        let mut sink = |b: &[u8]| tar.extend_from_slice(b);
        let mut w = TarWriter::new(0);
        let files: [(&str, Vec<u8>); 2] = [
            ("models/config.json", b"{}".to_vec()),
            ("models/w.safetensors", safetensors()),
        ];
        w.entry("models", &EntryKind::Dir, &mut sink).unwrap();
        for (p, b) in &files {
            let kind = EntryKind::File {
                size: b.len() as u64,
                executable: false,
            };
            w.entry(p, &kind, &mut sink).unwrap();
            w.data(b, &mut sink).unwrap();
            w.end_file().unwrap();
        }
        w.finish(&mut sink).unwrap();
        let ld = Digest::of(&tar);
        let config = json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [ld.to_string()]}})
        .to_string()
        .into_bytes();
        let cd = Digest::of(&config);
        let manifest = json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": cd.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": ld.to_string(), "size": tar.len()}]})
        .to_string()
        .into_bytes();
        Registry {
            manifest,
            config: (cd, config),
            layer: (ld, tar),
            ignores_range,
            ranges: Cell::new(0),
            streams: RefCell::new(Vec::new()),
        }
    }
}

impl Transport for Registry {
    type Body = Vec<u8>;
    type Stream = Vec<u8>;
    fn bytes_body(&self, parts: &[&[u8]]) -> Result<Vec<u8>, Error> {
        Ok(parts.concat())
    }
    async fn send(
        &self,
        req: &Request,
        _: Option<Vec<u8>>,
    ) -> Result<(Response, Option<Vec<u8>>), NetError> {
        let p = req.url.split_once("://").map_or("", |(_, r)| r);
        let p = &p[p.find('/').unwrap_or(0)..];
        let ok = |headers: &[(&str, &str)], b: &[u8]| Ok((Response::new(200, headers, b), None));
        if p == "/v2/" {
            return ok(&[], b"");
        }
        if p == "/v2/a/manifests/v1" {
            let t = [("content-type", "application/vnd.oci.image.manifest.v1+json")];
            return ok(&t, &self.manifest);
        }
        let blob = |d: &Digest| format!("/v2/a/blobs/{d}");
        if p == blob(&self.config.0) {
            return ok(&[], &self.config.1);
        }
        if p != blob(&self.layer.0) {
            return Ok((Response::new(404, &[], b""), None));
        }
        let bytes = &self.layer.1;
        let range = req
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("range"));
        let streams = req.stream_response;
        let range = range.and_then(|(_, v)| {
            let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
            let a: usize = a.parse().ok()?;
            let b = b
                .parse::<usize>()
                .map_or(bytes.len(), |b| (b + 1).min(bytes.len()));
            Some(a..b)
        });
        let (status, body) = match &range {
            Some(r) if !self.ignores_range => {
                self.ranges.set(self.ranges.get() + 1);
                (206, bytes[r.clone()].to_vec())
            }
            _ => (200, bytes.clone()),
        };
        let cr = match (status, range) {
            (206, Some(r)) => format!("bytes {}-{}/{}", r.start, r.end - 1, bytes.len()),
            _ => String::new(),
        };
        let len = body.len().to_string();
        let mut headers = vec![("content-length", len.as_str())];
        if status == 206 {
            headers.push(("content-range", cr.as_str()));
        }
        if streams {
            self.streams.borrow_mut().push(p.to_string());
            Ok((Response::new(status, &headers, b""), Some(body)))
        } else {
            Ok((Response::new(status, &headers, &body), None))
        }
    }
}

struct Look(Driver<Registry>);

impl Side for Look {
    type X = Registry;
    type Hook = ();
    fn driver(&mut self) -> (&mut Driver<Registry>, &()) {
        (&mut self.0, &())
    }
    async fn note(&mut self, _: &str) {}
    async fn copy(&mut self, _: &Reference, _: &Reference, _: &Descriptor) -> Result<(), Failure> {
        unreachable!()
    }
}

struct Once(Option<Vec<u8>>);

impl Body for Once {
    async fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, Error> {
        match self.0.take() {
            Some(b) => {
                *out = b;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl Streams for Look {
    type Body = Once;
    fn body(&self, s: Vec<u8>, _: &str) -> Once {
        Once(Some(s))
    }
}

fn look(ignores_range: bool) -> Look {
    Look(Driver::new(
        Registry::new(ignores_range),
        Default::default(),
    ))
}

#[test]
fn ls_and_inspect_read_a_layer_by_ranges() {
    let r = Reference::parse("r.example/a:v1", "r.example").unwrap();
    let mut s = look(false);
    let v = block_on(peek::ls(&mut s, &r, Some("models"), &[], None)).unwrap();
    let paths: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["models/config.json", "models/w.safetensors"]);
    assert_eq!(v["entries"][1]["size"], json!(safetensors().len()));
    assert_eq!(v["read"]["streamedLayers"], json!([]));
    assert!(s.0.transport().streams.borrow().is_empty());
    for path in [None, Some("models/w.safetensors")] {
        let v = block_on(peek::inspect(&mut s, &r, path, &[], None)).unwrap();
        let f = &v["files"][0];
        assert_eq!(f["path"], "models/w.safetensors", "{v}");
        assert_eq!(
            (f["params"].clone(), f["tensors"].clone()),
            (json!(32), json!(1))
        );
        assert_eq!(f["metadata"], json!({"format": "pt"}));
        assert_eq!(v["total"]["params"], json!(32));
    }
    let e = block_on(peek::ls(&mut s, &r, Some("nothing"), &[], None)).unwrap_err();
    assert!(matches!(e.error, Error::NotFound { .. }), "{e}");
    let e = block_on(peek::ls(&mut s, &r, None, &[3], None)).unwrap_err();
    assert!(matches!(e.error, Error::Usage { .. }), "{e}");
}

#[test]
fn a_registry_that_ignores_range_is_read_as_a_stream() {
    let r = Reference::parse("r.example/a:v1", "r.example").unwrap();
    let mut s = look(true);
    let v = block_on(peek::ls(&mut s, &r, None, &[], None)).unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["read"]["streamedLayers"], json!([0]));
    let v = block_on(peek::inspect(
        &mut s,
        &r,
        Some("models/w.safetensors"),
        &[],
        None,
    ))
    .unwrap();
    assert_eq!(v["files"][0]["params"], json!(32), "{v}");
    assert_eq!(s.0.transport().ranges.get(), 0);
}
