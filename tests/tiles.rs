//! The log as C2SP `tlog-tiles`, followed by a reader written here from the specification
//! (<https://c2sp.org/tlog-tiles>, RFC 6962, <https://c2sp.org/signed-note>) and sharing no code with
//! the server: it fetches the checkpoint, checks its signature with the registry's public key,
//! fetches the tiles the tree size calls for, and recomputes the root.

mod common;

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::{vadyl_ok, Server};
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

type Hash = [u8; 32];

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// RFC 6962 §2.1 MTH, recursively, straight from the definition.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest(b"").into(),
        1 => leaves[0],
        n => {
            let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// `N` as the spec writes it: 3-digit groups, all but the last prefixed with `x`.
fn encode_index(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

fn tile_path(level: &str, index: u64, width: u64) -> String {
    if width == 256 {
        format!("tile/{level}/{}", encode_index(index))
    } else {
        format!("tile/{level}/{}.p/{width}", encode_index(index))
    }
}

struct Checkpoint {
    size: u64,
    root: Hash,
}

/// Opens a signed note with the verifier key `name+keyid+base64(0x01 ‖ key)` and reads the
/// checkpoint body: origin, size, base64 root.
fn open_checkpoint(note: &str, verifier: &str) -> Result<Checkpoint, String> {
    let mut parts = verifier.splitn(3, '+');
    let (name, key_id, key) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let key = B64.decode(key).unwrap();
    assert_eq!(key[0], 1, "an ed25519 verifier key");
    let key = VerifyingKey::from_bytes(key[1..].try_into().unwrap()).unwrap();
    let mut id_input = name.as_bytes().to_vec();
    id_input.extend_from_slice(b"\n\x01");
    id_input.extend_from_slice(key.as_bytes());
    let computed_id = hex::encode(&Sha256::digest(&id_input)[..4]);
    assert_eq!(computed_id, key_id, "the key id is SHA-256(name ‖ \\n ‖ 0x01 ‖ key)[:4]");

    let split = note.find("\n\n").ok_or("no blank line before the signatures")?;
    let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
    let signed = signatures.lines().any(|line| {
        let Some(rest) = line.strip_prefix("\u{2014} ") else { return false };
        let Some((signer, sig)) = rest.split_once(' ') else { return false };
        let Ok(sig) = B64.decode(sig) else { return false };
        signer == name
            && sig.len() == 68
            && hex::encode(&sig[..4]) == key_id
            && key.verify_strict(text.as_bytes(), &Signature::from_bytes(sig[4..].try_into().unwrap())).is_ok()
    });
    if !signed {
        return Err("no valid signature by the trusted key".into());
    }
    let mut lines = text.lines();
    let _origin = lines.next().ok_or("no origin")?;
    let size = lines.next().and_then(|l| l.parse().ok()).ok_or("no size")?;
    let root: Hash =
        lines.next().and_then(|l| B64.decode(l).ok()).and_then(|r| r.try_into().ok()).ok_or("no root hash")?;
    Ok(Checkpoint { size, root })
}

/// A tiles client: fetches through `fetch` (path below the prefix → bytes), checks what it can.
struct Reader<'a> {
    fetch: &'a mut dyn FnMut(&str) -> Vec<u8>,
}

impl Reader<'_> {
    /// The first `width` hashes of tile `index` at `level`.
    fn tile(&mut self, level: u32, index: u64, width: u64) -> Result<Vec<Hash>, String> {
        let path = tile_path(&level.to_string(), index, width);
        let bytes = (self.fetch)(&path);
        if bytes.len() as u64 != width * 32 {
            return Err(format!("{path}: {} bytes, want {}", bytes.len(), width * 32));
        }
        Ok(bytes.chunks(32).map(|c| c.try_into().unwrap()).collect())
    }

    /// The tree's root at `size`, computed from the tiles alone: the perfect subtrees `size`
    /// decomposes into, largest first, each the MTH of 2^(h mod 8) hashes of tile level ⌊h/8⌋.
    fn root(&mut self, size: u64) -> Result<Hash, String> {
        let mut subtrees = Vec::new();
        let mut start = 0u64;
        for h in (0..64).rev() {
            if size & (1 << h) == 0 {
                continue;
            }
            let (level, below) = (h / 8, h % 8);
            let first = start >> (8 * level);
            let (index, offset) = (first / 256, (first % 256) as usize);
            let width = ((size >> (8 * level)) - index * 256).min(256);
            let hashes = self.tile(level, index, width)?;
            subtrees.push(mth(&hashes[offset..offset + (1 << below)]));
            start += 1 << h;
        }
        let mut subtrees = subtrees.into_iter().rev();
        let mut root = subtrees.next().unwrap_or_else(|| Sha256::digest(b"").into());
        for left in subtrees {
            root = node(&left, &root);
        }
        Ok(root)
    }

    /// Every entry of the tree at `size`, checked against the level-0 tiles (leaf hash =
    /// SHA-256(0x00 ‖ entry)).
    fn entries(&mut self, size: u64) -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        for index in 0..size.div_ceil(256) {
            let width = (size - index * 256).min(256);
            let path = tile_path("entries", index, width);
            let bundle = (self.fetch)(&path);
            let leaves = self.tile(0, index, width)?;
            let mut at = 0;
            for (i, leaf) in leaves.iter().enumerate() {
                let len = bundle
                    .get(at..at + 2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
                    .ok_or(format!("{path}: truncated"))?;
                let entry = bundle.get(at + 2..at + 2 + len).ok_or(format!("{path}: truncated"))?.to_vec();
                at += 2 + len;
                let mut h = Sha256::new();
                h.update([0u8]);
                h.update(&entry);
                if <Hash>::from(h.finalize()) != *leaf {
                    return Err(format!("{path}: entry {i} does not hash to its level-0 tile"));
                }
                out.push(entry);
            }
            if at != bundle.len() {
                return Err(format!("{path}: trailing bytes"));
            }
        }
        Ok(out)
    }
}

fn get(server: &Server, path: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::new().get(server.url(path)).bearer_auth(&server.token).send().unwrap()
}

fn fetch_from(server: &Server) -> impl FnMut(&str) -> Vec<u8> + '_ {
    move |path| {
        let r = get(server, &format!("/tlog/{path}"));
        assert_eq!(r.status(), 200, "{path}");
        r.bytes().unwrap().to_vec()
    }
}

/// A registry of 600-odd events: the hooks set-up and one binding per alias.
fn registry_of_600() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, data) = common::hooks_in_two_projects();
    let app = common::open(&data);
    for i in 0..600 {
        common::bind(&app, "shop", &format!("alias-{i}"), "hooks:1.0.0");
    }
    (dir, data)
}

fn verifier_key(data: &Path) -> String {
    let shown: Value = serde_json::from_str(&vadyl_ok(data, &["--json", "key", "show"])).unwrap();
    shown["verifierKey"].as_str().unwrap().to_owned()
}

#[test]
fn an_independent_tiles_reader_recomputes_the_checkpoint_and_catches_an_altered_tile() {
    let (_dir, data) = registry_of_600();
    let key = verifier_key(&data);
    vadyl_ok(&data, &["audit", "checkpoint"]);
    let server = Server::start(&data);

    let note = get(&server, "/tlog/checkpoint").text().unwrap();
    let cp = open_checkpoint(&note, &key).unwrap();
    assert!(cp.size > 600 && !cp.size.is_multiple_of(256), "{} events: full and partial tiles at two levels", cp.size);
    let mut fetch = fetch_from(&server);
    let mut reader = Reader { fetch: &mut fetch };
    assert_eq!(reader.root(cp.size).unwrap(), cp.root, "the tiles recompute the signed root");

    // Each entry is an event hash: the event at that position hashes to it.
    let entries = reader.entries(cp.size).unwrap();
    assert_eq!(entries.len() as u64, cp.size);
    for position in [1u64, 257, cp.size] {
        let event: Value = get(&server, &format!("/events/{position}")).json().unwrap();
        assert_eq!(event["hash"].as_str().unwrap(), hex::encode(&entries[position as usize - 1]));
    }
    // A full tile is immutable and says so; the level-1 tile agrees with the level-0 tiles.
    let full = get(&server, "/tlog/tile/0/000");
    assert_eq!(full.headers()["cache-control"], "public, max-age=31536000, immutable");
    let level1 = reader.tile(1, 0, 2).unwrap();
    let level0 = reader.tile(0, 1, 256).unwrap();
    assert_eq!(level1[1], mth(&level0));

    // Altered in transit: one flipped bit in one tile, and the root no longer matches.
    let mut tampered = {
        let mut inner = fetch_from(&server);
        move |path: &str| {
            let mut bytes = inner(path);
            if path == "tile/1/000.p/2" {
                bytes[5] ^= 1;
            }
            bytes
        }
    };
    let mut reader = Reader { fetch: &mut tampered };
    assert_ne!(reader.root(cp.size).unwrap(), cp.root, "a tile altered in transit is detected");
    // …and an altered entry bundle no longer hashes to its tile.
    let mut tampered = {
        let mut inner = fetch_from(&server);
        move |path: &str| {
            let mut bytes = inner(path);
            if path.starts_with("tile/entries/001") {
                bytes[40] ^= 1;
            }
            bytes
        }
    };
    let err = Reader { fetch: &mut tampered }.entries(cp.size).unwrap_err();
    assert!(err.contains("entry 1 does not hash"), "{err}");

    // Altered on disk, past the append-only triggers: the served tile leads to another root.
    let db = common::Database::of(&data);
    db.run(&format!(
        "{} UPDATE merkle_tiles SET hash = {} WHERE level = 1 AND idx = 0",
        db.lift_update_guard("merkle_tiles"),
        db.zero32()
    ))
    .unwrap();
    let mut fetch = fetch_from(&server);
    let mut reader = Reader { fetch: &mut fetch };
    assert_ne!(reader.root(cp.size).unwrap(), cp.root, "a tile altered on disk is detected");
    // The server's own proofs come from the same tiles (leaf 300's path has level-1 node 0 as a
    // sibling), and the verifier refuses them.
    let proof = get(&server, "/audit/proof/inclusion?position=300").text().unwrap();
    let proof_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(proof_file.path(), proof).unwrap();
    let out = common::vadyl(
        &data,
        &["audit", "verify-proof", proof_file.path().to_str().unwrap(), "--public-key", key.as_str()],
    );
    assert!(!out.status.success(), "a proof built from a tampered tile verifies: {}", common::stdout(&out));
    // And the operator's own verification names the altered node.
    let out = common::vadyl(&data, &["audit", "verify"]);
    assert!(!out.status.success());
    assert!(common::stdout(&out).contains("stored Merkle tile node 1/0 (events 1–256)"), "{}", common::stdout(&out));
}

#[test]
fn tile_paths_are_strict_and_tiles_past_the_head_do_not_exist() {
    let (_dir, data) = common::hooks_in_two_projects();
    let server = Server::start(&data);
    let head = server.get("/events?limit=1").1["head"].as_u64().unwrap();
    assert!(head < 256);
    let partial = get(&server, &format!("/tlog/tile/0/000.p/{head}"));
    assert_eq!(partial.status(), 200);
    assert_eq!(partial.bytes().unwrap().len() as u64, head * 32);
    for (path, why) in [
        ("/tlog/tile/0/000", "a full tile the log does not have yet"),
        (&format!("/tlog/tile/0/000.p/{}", head + 1) as &str, "wider than the log"),
        ("/tlog/tile/1/000.p/1", "a level the log does not reach"),
        ("/tlog/tile/0/x000/000", "a leading zero group"),
        ("/tlog/tile/0/0", "not three digits"),
        ("/tlog/tile/64/000", "level over 63"),
        ("/tlog/tile/0/000.p/256", "a partial tile of full width"),
        ("/tlog/tile/entries/001", "entries past the head"),
    ] {
        let r = get(&server, path);
        assert_eq!(r.status(), 404, "{path}: {why}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{path}");
    }
}
