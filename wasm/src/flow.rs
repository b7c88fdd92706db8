//! The core's image workflows ([`lamina_core::flow`]) over the shared [`Driver`], once for the
//! page and the Worker. Each need is one registry operation, on the source's repository (a
//! manifest, a config) or the destination's (is a blob there, a mount, a push); what differs
//! between the two runtimes is their [`Side`]: where events and notes go, and how a blob is
//! copied from one registry to another (the Worker streams it; the page cannot).

use lamina_core::flow::{
    Answer, Configs, Edit, EnsureBlobs, Flow, Image, Need, Next, Placed, Placement, PlatformSel,
    PushArtifact, PushImages, Resolve, Top,
};
use lamina_core::image::{Config, Descriptor, Manifest, MAX_CONFIG_SIZE};
use lamina_core::reference::Reference;
use lamina_core::registry::{GetBlob, GetManifest, HeadBlob, MountBlob, PutManifest};

use crate::run::{Driver, Failure, Hook, NoBlob, Transport};

/// What a runtime brings to a workflow.
#[allow(async_fn_in_trait)] // one thread: Send is not needed
pub trait Side {
    /// How its requests go out.
    type X: Transport;
    /// Where the operations' events go.
    type Hook: Hook<NoBlob<<Self::X as Transport>::Body>>;
    /// The driver, and the hook of its operations.
    fn driver(&mut self) -> (&mut Driver<Self::X>, &Self::Hook);
    /// A line the workflow has for the user.
    async fn note(&mut self, line: &str);
    /// Copies `blob` from `from`'s repository into `to`'s (it was neither mounted nor found
    /// there).
    async fn copy(
        &mut self,
        from: &Reference,
        to: &Reference,
        blob: &Descriptor,
    ) -> Result<(), Failure>;
}

/// Runs `flow`, reading from `from` and writing to `to`.
pub async fn run<S: Side, F: Flow>(
    s: &mut S,
    from: &Reference,
    to: &Reference,
    mut flow: F,
) -> Result<F::Output, Failure> {
    let mut answer = None;
    loop {
        match flow.step(answer.take())? {
            Next::Done(out) => return Ok(out),
            Next::Note(line) => s.note(&line).await,
            Next::Need(need) => answer = Some(meet(s, from, to, need).await?),
        }
    }
}

/// One need, met with one operation (or the side's copy).
async fn meet<S: Side>(
    s: &mut S,
    from: &Reference,
    to: &Reference,
    need: Need,
) -> Result<Answer, Failure> {
    let (d, hook) = s.driver();
    Ok(match need {
        Need::Manifest(reference) => Answer::Manifest(
            d.run(from, GetManifest::new(&from.repository, &reference), hook)
                .await?
                .0,
        ),
        Need::Config(c) => Answer::Blob(
            d.run(
                from,
                GetBlob::new(&from.repository, &c.digest, MAX_CONFIG_SIZE),
                hook,
            )
            .await?
            .0,
        ),
        Need::HasBlob(b) => Answer::Yes(
            d.run(to, HeadBlob::new(&to.repository, &b.digest, true), hook)
                .await?
                .0
                .is_some(),
        ),
        Need::Mount(b) => Answer::Yes(
            d.run(
                to,
                MountBlob::new(&to.repository, &from.repository, &b.digest),
                hook,
            )
            .await?
            .0,
        ),
        Need::PutBlob(bytes) => Answer::Pushed(d.upload_bytes(to, bytes, hook).await?),
        Need::PutManifest {
            reference,
            media_type,
            bytes,
        } => Answer::Pushed(
            d.run(
                to,
                PutManifest::new(&to.repository, &reference, media_type, bytes),
                hook,
            )
            .await?
            .0,
        ),
        Need::CopyBlob(b) => {
            s.copy(from, to, &b).await?;
            Answer::Done
        }
    })
}

/// Where `from`'s blobs stand relative to `to` (registries both).
pub fn placement(from: &Reference, to: &Reference) -> Placement {
    let same_registry = from.registry == to.registry;
    Placement {
        same_store: same_registry && from.repository == to.repository,
        same_registry,
        dest_is_registry: true,
    }
}

/// The image `r` names (an index, with the children `sel` picks) and the configs of its
/// images, in order.
pub async fn image<S: Side>(
    s: &mut S,
    r: &Reference,
    sel: PlatformSel,
) -> Result<(Top, Vec<Config>), Failure> {
    let what = r.to_string();
    let top = run(s, r, r, Resolve::new(&what, &r.reference(), sel)).await?;
    let ms: Vec<&Manifest> = top.images().into_iter().map(|i| &i.manifest).collect();
    let configs = Configs::new(&what, &ms)?;
    let configs = run(s, r, r, configs).await?;
    Ok((top, configs))
}

/// The blobs of an image: its layers, then its config.
fn blobs(m: &Manifest) -> Result<Vec<Descriptor>, Failure> {
    let mut v = m.layers()?;
    v.push(m.config()?);
    Ok(v)
}

/// Makes sure `blobs` (of `from`) are in `to`'s repository: mounted within one registry, found
/// there, or copied. `what` names them in the note that tells how.
pub async fn ensure<S: Side>(
    s: &mut S,
    from: &Reference,
    to: &Reference,
    blobs: Vec<Descriptor>,
    what: &str,
) -> Result<Placed, Failure> {
    let flow = EnsureBlobs::new(blobs, placement(from, to), &to.name()).of(what);
    run(s, from, to, flow).await
}

/// Makes sure the blobs of the base image `m` (of `from`: its layers and config) are in `to`'s
/// repository.
pub async fn ensure_base<S: Side>(
    s: &mut S,
    from: &Reference,
    to: &Reference,
    m: &Manifest,
) -> Result<Placed, Failure> {
    ensure(s, from, to, blobs(m)?, "base layers").await
}

/// Pushes `image` with its `config`, both edited by `edit`, to `to`'s tag: the config first,
/// the tag last. Returns `name@sha256:...`.
pub async fn push<S: Side>(
    s: &mut S,
    to: &Reference,
    image: Image,
    config: Config,
    edit: Edit,
) -> Result<String, Failure> {
    let flow = PushImages::new(vec![image], vec![config], None, edit, to.tag_or_latest())?;
    let digest = run(s, to, to, flow).await?;
    Ok(format!("{}@{digest}", to.name()))
}

/// Pushes the model artifact `a` (its layers at `to` already) to `to`'s tag: the config
/// first, the manifest last. Returns `name@sha256:...`.
pub async fn push_artifact<S: Side>(
    s: &mut S,
    to: &Reference,
    a: lamina_core::target::Assembled,
) -> Result<String, Failure> {
    let digest = run(s, to, to, PushArtifact::new(a, to.tag_or_latest())).await?;
    Ok(format!("{}@{digest}", to.name()))
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    use lamina_core::compress::Compression;
    use lamina_core::flow::NewLayer;
    use lamina_core::http::{Method, Request, Response};
    use lamina_core::image::{History, Platform};
    use lamina_core::media;
    use lamina_core::registry::NetError;
    use lamina_core::{Digest, Error};

    use super::*;
    use crate::block_on;

    /// Registries on 127.0.0.1 in memory: documents and blobs by `host/v2/...` path, mounts
    /// within a host, one-PUT uploads; every request is written down as `METHOD host/path`.
    #[derive(Default)]
    struct Regs {
        files: RefCell<HashMap<String, (String, Vec<u8>)>>,
        uploads: Cell<u32>,
        sent: RefCell<Vec<String>>,
    }

    impl Regs {
        fn put(&self, key: &str, ct: &str, bytes: &[u8]) {
            self.files
                .borrow_mut()
                .insert(key.into(), (ct.into(), bytes.to_vec()));
        }

        fn get(&self, key: &str) -> Option<(String, Vec<u8>)> {
            self.files.borrow().get(key).cloned()
        }
    }

    impl Transport for Regs {
        type Body = Vec<u8>;
        type Stream = ();
        fn bytes_body(&self, parts: &[&[u8]]) -> Result<Vec<u8>, Error> {
            Ok(parts.concat())
        }
        async fn send(
            &self,
            req: &Request,
            body: Option<Vec<u8>>,
        ) -> Result<(Response, Option<()>), NetError> {
            let url = req.url.strip_prefix("http://").unwrap_or(&req.url);
            let (at, query) = url.split_once('?').unwrap_or((url, ""));
            let (host, path) = at.split_at(at.find('/').unwrap_or(at.len()));
            let arg = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .map(|v| v.replace("%3A", ":").replace("%2F", "/"))
            };
            self.sent
                .borrow_mut()
                .push(format!("{} {host}{path}", req.method.as_str()));
            let r = |status, headers: &[(&str, &str)], body: &[u8]| {
                Ok((Response::new(status, headers, body), None))
            };
            let repo = path
                .strip_prefix("/v2/")
                .and_then(|p| p.split_once("/blobs/").or(p.split_once("/manifests/")))
                .map_or("", |(repo, _)| repo);
            match req.method {
                Method::Get if path == "/v2/" => r(200, &[], b""),
                Method::Get | Method::Head => match self.get(&format!("{host}{path}")) {
                    Some((ct, b)) => {
                        let len = b.len().to_string();
                        let body = if req.method == Method::Get {
                            &b[..]
                        } else {
                            b""
                        };
                        r(
                            200,
                            &[("content-type", &ct), ("content-length", &len)],
                            body,
                        )
                    }
                    None => r(404, &[], b""),
                },
                Method::Post => {
                    if let (Some(d), Some(from)) = (arg("mount"), arg("from")) {
                        if let Some((ct, b)) = self.get(&format!("{host}/v2/{from}/blobs/{d}")) {
                            self.put(&format!("{host}/v2/{repo}/blobs/{d}"), &ct, &b);
                            return r(201, &[], b"");
                        }
                    }
                    let n = self.uploads.get() + 1;
                    self.uploads.set(n);
                    let loc = format!("/v2/{repo}/blobs/uploads/u{n}");
                    r(202, &[("location", &loc)], b"")
                }
                Method::Delete => r(204, &[], b""),
                Method::Put => {
                    let b = body.unwrap_or_default();
                    let d = Digest::of(&b).to_string();
                    if path.contains("/blobs/uploads/") {
                        if arg("digest").as_deref() != Some(&d) {
                            return r(400, &[], b"");
                        }
                        self.put(&format!("{host}/v2/{repo}/blobs/{d}"), "", &b);
                    } else {
                        let ct = req.header("content-type").unwrap_or_default().to_string();
                        self.put(&format!("{host}{path}"), &ct, &b);
                        self.put(&format!("{host}/v2/{repo}/manifests/{d}"), &ct, &b);
                    }
                    r(201, &[("docker-content-digest", &d)], b"")
                }
                _ => r(405, &[], b""),
            }
        }
    }

    /// A side over [`Regs`]: notes written down, a copy done in memory.
    struct Test {
        d: Driver<Regs>,
        notes: Vec<String>,
        copied: Vec<Digest>,
    }

    impl Side for Test {
        type X = Regs;
        type Hook = ();
        fn driver(&mut self) -> (&mut Driver<Regs>, &()) {
            (&mut self.d, &())
        }
        async fn note(&mut self, line: &str) {
            self.notes.push(line.into());
        }
        async fn copy(
            &mut self,
            from: &Reference,
            to: &Reference,
            blob: &Descriptor,
        ) -> Result<(), Failure> {
            let regs = self.d.transport();
            let key =
                |r: &Reference| format!("{}/v2/{}/blobs/{}", r.registry, r.repository, blob.digest);
            let (ct, b) = regs
                .get(&key(from))
                .ok_or_else(|| Error::internal("no blob"))?;
            regs.put(&key(to), &ct, &b);
            self.copied.push(blob.digest.clone());
            Ok(())
        }
    }

    fn reference(s: &str) -> Reference {
        Reference::parse(s, "r8.im").unwrap()
    }

    /// `127.0.0.1:5000/base:latest`: an index of amd64 and arm64, each image two layers.
    fn side() -> Test {
        let regs = Regs::default();
        let base = "127.0.0.1:5000/v2/base";
        let mut entries = Vec::new();
        for arch in ["amd64", "arm64"] {
            let c = format!(
                r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
                Digest::of(b"d1"),
                Digest::of(b"d2")
            );
            let mut layers = Vec::new();
            for n in 1..=2 {
                let l = format!("{arch} layer {n}").into_bytes();
                regs.put(&format!("{base}/blobs/{}", Digest::of(&l)), "", &l);
                layers.push(format!(
                    r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#,
                    media::OCI_LAYER_GZIP,
                    Digest::of(&l),
                    l.len()
                ));
            }
            regs.put(
                &format!("{base}/blobs/{}", Digest::of(c.as_bytes())),
                "",
                c.as_bytes(),
            );
            let m = format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":{}}},"layers":[{}]}}"#,
                media::OCI_MANIFEST,
                media::OCI_CONFIG,
                Digest::of(c.as_bytes()),
                c.len(),
                layers.join(",")
            );
            let md = Digest::of(m.as_bytes());
            regs.put(
                &format!("{base}/manifests/{md}"),
                media::OCI_MANIFEST,
                m.as_bytes(),
            );
            entries.push(format!(
                r#"{{"mediaType":"{}","digest":"{md}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
                media::OCI_MANIFEST,
                m.len()
            ));
        }
        let ix = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{}]}}"#,
            media::OCI_INDEX,
            entries.join(",")
        );
        regs.put(
            &format!("{base}/manifests/latest"),
            media::OCI_INDEX,
            ix.as_bytes(),
        );
        Test {
            d: Driver::new(regs, HashMap::new()),
            notes: Vec::new(),
            copied: Vec::new(),
        }
    }

    fn sent(t: &Test) -> Vec<String> {
        t.d.transport().sent.borrow().clone()
    }

    #[test]
    fn a_base_is_resolved_mounted_and_pushed_with_the_tag_last() {
        let mut t = side();
        let (base, dest) = (
            reference("127.0.0.1:5000/base:latest"),
            reference("127.0.0.1:5000/dest:v1"),
        );
        let sel = PlatformSel::One(Platform::linux_amd64());
        let (top, mut configs) = block_on(image(&mut t, &base, sel)).unwrap();
        let Top::Index { mut children, .. } = top else {
            panic!("an index")
        };
        assert_eq!(children.len(), 1);
        assert_eq!(configs[0].platform().unwrap().architecture, "amd64");
        let img = children.pop().unwrap();
        assert_eq!(img.index_pos, Some(0));
        assert_eq!(blobs(&img.manifest).unwrap().len(), 3);
        // within one registry: mounted
        let p = block_on(ensure_base(&mut t, &base, &dest, &img.manifest)).unwrap();
        assert_eq!((p.mounted, p.present, p.copied), (3, 0, 0));
        assert_eq!(
            t.notes,
            ["base layers in 127.0.0.1:5000/dest: 3 mounted, 0 already there, 0 copied"]
        );
        assert!(t.copied.is_empty());
        // a new layer on top: the config, then the manifest by the tag
        let edit = Edit {
            layers: vec![NewLayer {
                compression: Compression::Gzip,
                digest: Digest::of(b"new"),
                size: 3,
                diff_id: Digest::of(b"new diff"),
                history: History::default(),
                annotations: Vec::new(),
            }],
            ..Edit::default()
        };
        let before = sent(&t).len();
        let out = block_on(push(&mut t, &dest, img, configs.remove(0), edit)).unwrap();
        let (name, digest) = out.split_once('@').unwrap();
        assert_eq!(name, "127.0.0.1:5000/dest");
        let puts: Vec<String> = sent(&t)[before..]
            .iter()
            .filter(|l| l.starts_with("PUT"))
            .cloned()
            .collect();
        assert_eq!(puts.len(), 2, "{puts:?}");
        assert!(puts[0].contains("/v2/dest/blobs/uploads/"), "{puts:?}");
        assert_eq!(puts[1], "PUT 127.0.0.1:5000/v2/dest/manifests/v1");
        let regs = t.d.transport();
        let (_, m) = regs.get("127.0.0.1:5000/v2/dest/manifests/v1").unwrap();
        assert_eq!(Digest::of(&m).to_string(), digest);
        let m = Manifest::parse(m, media::OCI_MANIFEST).unwrap();
        assert_eq!(m.layers().unwrap().len(), 3);
        let c = m.config().unwrap();
        let (_, cb) = regs
            .get(&format!("127.0.0.1:5000/v2/dest/blobs/{}", c.digest))
            .unwrap();
        let config = Config::parse(cb).unwrap();
        assert_eq!(config.diff_ids().unwrap()[2], Digest::of(b"new diff"));
    }

    #[test]
    fn across_registries_blobs_are_found_or_copied_and_none_mounted() {
        let mut t = side();
        let (base, dest) = (
            reference("127.0.0.1:5000/base:latest"),
            reference("127.0.0.1:5001/dest:v1"),
        );
        let (top, _) = block_on(image(&mut t, &base, PlatformSel::All)).unwrap();
        assert_eq!(top.images().len(), 2);
        let bs = blobs(&top.images()[1].manifest).unwrap();
        // the first layer is there already
        let regs = t.d.transport();
        regs.put(
            &format!("127.0.0.1:5001/v2/dest/blobs/{}", bs[0].digest),
            "",
            b"arm64 layer 1",
        );
        let p = block_on(ensure(&mut t, &base, &dest, bs.clone(), "base layers")).unwrap();
        assert_eq!((p.mounted, p.present, p.copied), (0, 1, 2));
        assert_eq!(t.copied, [bs[1].digest.clone(), bs[2].digest.clone()]);
        assert!(
            sent(&t).iter().all(|l| !l.starts_with("POST")),
            "{:?}",
            sent(&t)
        );
        assert_eq!(
            t.notes,
            ["base layers in 127.0.0.1:5001/dest: 0 mounted, 1 already there, 2 copied"]
        );
    }

    #[test]
    fn one_repository_asks_nothing_and_a_missing_image_names_its_registry() {
        let mut t = side();
        let base = reference("127.0.0.1:5000/base:latest");
        let bs = vec![Descriptor::new(media::OCI_LAYER_GZIP, Digest::of(b"x"), 1)];
        let p = block_on(ensure(&mut t, &base, &base, bs, "base layers")).unwrap();
        assert_eq!(p, Placed::default());
        assert!(sent(&t).is_empty() && t.notes.is_empty());
        // no platform: the index as it is, no child and no config fetched
        let (top, configs) = block_on(image(&mut t, &base, PlatformSel::None)).unwrap();
        assert!(matches!(top, Top::Index { .. }) && configs.is_empty());
        assert_eq!(
            sent(&t),
            [
                "GET 127.0.0.1:5000/v2/",
                "GET 127.0.0.1:5000/v2/base/manifests/latest"
            ]
        );
        let gone = reference("127.0.0.1:5000/gone:latest");
        let e = block_on(image(&mut t, &gone, PlatformSel::None)).unwrap_err();
        assert_eq!(e.registry.as_deref(), Some("127.0.0.1:5000"));
        assert!(
            matches!(e.error, Error::Http { status: 404, .. }),
            "{}",
            e.error
        );
    }
    #[test]
    fn an_artifact_is_pushed_config_first_and_its_tag_names_its_manifest() {
        let mut t = side();
        let dest = reference("127.0.0.1:5000/model:pack");
        let a = lamina_core::target::Assembled {
            config: br#"{"descriptor":{"name":"tiny"}}"#.to_vec(),
            layers: Vec::new(),
            manifest: br#"{"schemaVersion":2,"layers":[]}"#.to_vec(),
        };
        let out = block_on(push_artifact(&mut t, &dest, a.clone())).unwrap();
        assert_eq!(
            out,
            format!("127.0.0.1:5000/model@{}", Digest::of(&a.manifest))
        );
        let puts: Vec<String> = sent(&t)
            .into_iter()
            .filter(|l| l.starts_with("PUT"))
            .collect();
        assert_eq!(puts.len(), 2, "{puts:?}");
        assert!(puts[0].contains("/v2/model/blobs/uploads/"), "{puts:?}");
        assert_eq!(puts[1], "PUT 127.0.0.1:5000/v2/model/manifests/pack");
        let regs = t.d.transport();
        let (ct, m) = regs.get("127.0.0.1:5000/v2/model/manifests/pack").unwrap();
        assert_eq!((ct.as_str(), m), (media::OCI_MANIFEST, a.manifest));
        let (_, c) = regs
            .get(&format!(
                "127.0.0.1:5000/v2/model/blobs/{}",
                Digest::of(&a.config)
            ))
            .unwrap();
        assert_eq!(c, a.config);
    }
}
