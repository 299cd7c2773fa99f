//! RFC 6962 / RFC 9162 Merkle trees over Vadyl's event log.
//!
//! The hash chain that links each event to its predecessor already makes the
//! log tamper-evident, but proving anything with it is linear: to show that an
//! event is in the log, or that today's log extends yesterday's, a verifier
//! has to replay every event in between. A Merkle tree over the same events
//! makes both proofs logarithmic, and using the exact tree of RFC 6962 (and its
//! successor, RFC 9162) means that any transparency-log tooling — witnesses,
//! monitors, the Go and Rust verifiers in the wild — can check our proofs
//! without knowing anything about Vadyl.
//!
//! The leaves of the tree are the 32-byte event hashes (SHA-256 of each
//! event's canonical encoding), run through [`leaf_hash`]. Everything else in
//! this module works on those *leaf hashes*: [`root`], [`inclusion_proof`],
//! [`consistency_proof`] and [`MerkleAccumulator::push`] all take values that
//! have already been through [`leaf_hash`], just like the `leaf_hash` argument
//! of RFC 9162's verification algorithms. Keeping the domain-separating
//! `0x00`/`0x01` prefixes in [`leaf_hash`] and [`node_hash`] is what stops an
//! interior node from being passed off as a leaf (the classic second-preimage
//! attack on naive Merkle trees).
//!
//! This module is pure: no I/O, no clocks, no global state. The generators
//! ([`root`], the two proof constructors) take the full slice of leaf hashes
//! and cost O(n) hashing; the verifiers cost O(log n) and are what untrusted
//! parties run. [`MerkleAccumulator`] maintains the root incrementally in
//! O(log n) memory, so the writer never has to rehash the whole log on append.
//!
//! A proof only means something relative to a root *and* the tree size that
//! root was computed at, so verifiers must take both from the same trusted
//! source (a signed checkpoint), never the size from the prover.

use sha2::{Digest, Sha256};

/// A SHA-256 output: an event hash, a leaf hash, an interior node or a root.
pub type Hash32 = [u8; 32];

/// RFC 6962 §2.1 domain separation prefix for leaves.
const LEAF_PREFIX: u8 = 0x00;
/// RFC 6962 §2.1 domain separation prefix for interior nodes.
const NODE_PREFIX: u8 = 0x01;

/// Why a Merkle proof could not be produced or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is out of range for a tree of size {tree_size}")]
    IndexOutOfRange { index: u64, tree_size: u64 },
    /// A consistency proof was asked for (or checked) from a larger tree to a smaller one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    OldSizeExceedsNewSize { old_size: u64, new_size: u64 },
    /// The proof does not have the number of hashes these tree sizes require.
    #[error("proof has {actual} hashes, but a proof for these tree sizes has exactly {expected}")]
    WrongProofLength { expected: usize, actual: usize },
    /// An inclusion proof does not lead from the leaf to the expected root.
    #[error("inclusion proof does not lead to the expected root hash")]
    RootMismatch,
    /// A consistency proof does not reproduce the old tree's root.
    #[error("consistency proof does not reproduce the old root hash")]
    OldRootMismatch,
    /// A consistency proof does not reproduce the new tree's root (or two trees
    /// of the same size have different roots).
    #[error("consistency proof does not reproduce the new root hash")]
    NewRootMismatch,
    /// Saved accumulator state is not a valid set of peaks for its size.
    #[error("accumulator of size {size} needs {expected} peak hashes, got {actual}")]
    InvalidAccumulatorState { size: u64, expected: usize, actual: usize },
}

/// Hashes an event hash into a Merkle leaf: `SHA-256(0x00 || event_hash)`.
pub fn leaf_hash(event_hash: &Hash32) -> Hash32 {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_PREFIX]);
    hasher.update(event_hash);
    hasher.finalize().into()
}

/// Hashes two children into their parent: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut hasher = Sha256::new();
    hasher.update([NODE_PREFIX]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash32 {
    Sha256::digest(b"").into()
}

/// Incremental Merkle tree: push leaf hashes in log order and read the root at
/// the current size at any time.
///
/// The state is one "peak" per set bit of the size: the roots of the perfect
/// subtrees the RFC 6962 tree decomposes into, largest (leftmost) first. A push
/// merges equal-sized peaks like a binary counter carries, so both
/// [`push`](Self::push) and [`root`](Self::root) are O(log n) in time and memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerkleAccumulator {
    size: u64,
    peaks: Vec<Hash32>,
}

impl MerkleAccumulator {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds an accumulator from a saved [`size`](Self::size) and
    /// [`peaks`](Self::peaks), so a restart need not rehash the whole log.
    pub fn from_peaks(size: u64, peaks: Vec<Hash32>) -> Result<Self, MerkleError> {
        let expected = size.count_ones() as usize;
        if peaks.len() != expected {
            return Err(MerkleError::InvalidAccumulatorState { size, expected, actual: peaks.len() });
        }
        Ok(Self { size, peaks })
    }

    /// Appends the next leaf hash (already [`leaf_hash`]'ed).
    pub fn push(&mut self, leaf: Hash32) {
        let mut carry = leaf;
        let mut size = self.size;
        // Every trailing one bit of the size is a peak of the same height as
        // `carry`: merge them, exactly like incrementing a binary counter.
        while size & 1 == 1 {
            if let Some(left) = self.peaks.pop() {
                carry = node_hash(&left, &carry);
            }
            size >>= 1;
        }
        self.peaks.push(carry);
        self.size += 1;
    }

    /// Number of leaves pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The roots of the perfect subtrees making up the tree, leftmost first.
    pub fn peaks(&self) -> &[Hash32] {
        &self.peaks
    }

    /// `MTH(D[size])`: the RFC 6962 root of all leaves pushed so far.
    pub fn root(&self) -> Hash32 {
        let mut peaks = self.peaks.iter().rev();
        match peaks.next() {
            None => empty_root(),
            Some(&last) => peaks.fold(last, |right, left| node_hash(left, &right)),
        }
    }
}

/// `MTH(D[n])`: the RFC 6962 root over `leaves`, which are leaf hashes.
///
/// Computed bottom-up in a single buffer of `n / 2` hashes: pairing adjacent
/// nodes level by level and promoting an odd last node unchanged yields the
/// same tree as RFC 6962's "largest power of two smaller than n" split.
pub fn root(leaves: &[Hash32]) -> Hash32 {
    match leaves {
        [] => return empty_root(),
        [single] => return *single,
        _ => {}
    }
    let mut level = Vec::with_capacity(leaves.len().div_ceil(2));
    let mut pairs = leaves.chunks_exact(2);
    for pair in &mut pairs {
        level.push(node_hash(&pair[0], &pair[1]));
    }
    level.extend_from_slice(pairs.remainder());

    let mut len = level.len();
    while len > 1 {
        // Writing slot i only after reading slots 2i and 2i+1, which are >= i,
        // so the level can be reduced in place.
        for i in 0..len / 2 {
            level[i] = node_hash(&level[2 * i], &level[2 * i + 1]);
        }
        if len % 2 == 1 {
            level[len / 2] = level[len - 1];
        }
        len = len.div_ceil(2);
    }
    level.first().copied().unwrap_or_else(empty_root)
}

/// Where proof generation reads the tree: the hash of the perfect subtree at `level` (height) and
/// `index`, which covers leaves `[index·2^level, (index+1)·2^level)`.
///
/// A slice of leaves is one source ([`inclusion_proof`], [`consistency_proof`]); stored tiles
/// (`super::tiles`) are another, which turns every proof into O(log n) reads instead of reading the
/// whole log. Proof generation only ever asks for nodes that lie inside the tree it proves over.
pub trait NodeSource {
    type Error: From<MerkleError>;
    fn node(&mut self, level: u32, index: u64) -> Result<Hash32, Self::Error>;
}

/// The leaves themselves, as a [`NodeSource`].
struct Leaves<'a>(&'a [Hash32]);

impl NodeSource for Leaves<'_> {
    type Error = MerkleError;
    fn node(&mut self, level: u32, index: u64) -> Result<Hash32, MerkleError> {
        let tree_size = self.0.len() as u64;
        let start = index << level;
        let end = (index + 1) << level;
        let range = usize::try_from(start).ok().zip(usize::try_from(end).ok()).filter(|&(_, e)| e <= self.0.len());
        range
            .map(|(s, e)| root(&self.0[s..e]))
            .ok_or(MerkleError::IndexOutOfRange { index: end.saturating_sub(1), tree_size })
    }
}

/// `MTH(D[lo:hi])` for a range the RFC 6962 recursion produces (`lo` aligned to the largest power
/// of two below `hi - lo`): the perfect subtrees it decomposes into, folded from the right.
pub fn range_root<S: NodeSource>(source: &mut S, lo: u64, hi: u64) -> Result<Hash32, S::Error> {
    let mut peaks = range_peaks(source, lo, hi)?.into_iter().rev();
    let last = peaks.next().unwrap_or_else(empty_root);
    Ok(peaks.fold(last, |right, left| node_hash(&left, &right)))
}

/// The perfect subtrees `[lo, hi)` decomposes into, leftmost (largest) first: for `[0, n)`, the
/// peaks a [`MerkleAccumulator`] of size `n` holds.
pub fn range_peaks<S: NodeSource>(source: &mut S, lo: u64, hi: u64) -> Result<Vec<Hash32>, S::Error> {
    let mut peaks = Vec::with_capacity(64);
    let mut at = lo;
    while at < hi {
        // The tallest perfect subtree that starts at `at` and ends by `hi`.
        let fits = 63 - (hi - at).leading_zeros();
        let level = if at == 0 { fits } else { fits.min(at.trailing_zeros()) };
        peaks.push(source.node(level, at >> level)?);
        at += 1 << level;
    }
    Ok(peaks)
}

/// `PATH(m, D[n])` (RFC 6962 §2.1.1, RFC 9162 §2.1.3.1): the audit path for
/// the leaf at 0-based `index`, deepest sibling first.
pub fn inclusion_proof(leaves: &[Hash32], index: u64) -> Result<Vec<Hash32>, MerkleError> {
    inclusion_proof_from(&mut Leaves(leaves), index, leaves.len() as u64)
}

/// [`inclusion_proof`] over any [`NodeSource`] holding a tree of `tree_size` leaves.
pub fn inclusion_proof_from<S: NodeSource>(
    source: &mut S,
    index: u64,
    tree_size: u64,
) -> Result<Vec<Hash32>, S::Error> {
    if index >= tree_size {
        return Err(MerkleError::IndexOutOfRange { index, tree_size }.into());
    }
    let mut proof = Vec::with_capacity(inclusion_proof_len(index, tree_size));
    let (mut lo, mut hi) = (0, tree_size);
    // Top-down: the sibling of each subtree the leaf is in, collected then reversed (deepest first).
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            proof.push(range_root(source, lo + k, hi)?);
            hi = lo + k;
        } else {
            proof.push(range_root(source, lo, lo + k)?);
            lo += k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Checks that `leaf` (a leaf hash) is at `index` in the tree of `tree_size`
/// leaves whose root is `root`, following RFC 9162 §2.1.3.2.
///
/// `tree_size` must come from the same trusted source as `root`.
pub fn verify_inclusion(
    leaf: &Hash32,
    index: u64,
    tree_size: u64,
    proof: &[Hash32],
    root: &Hash32,
) -> Result<(), MerkleError> {
    if index >= tree_size {
        return Err(MerkleError::IndexOutOfRange { index, tree_size });
    }
    let expected = inclusion_proof_len(index, tree_size);
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength { expected, actual: proof.len() });
    }

    let mut fn_ = index;
    let mut sn = tree_size - 1;
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(MerkleError::WrongProofLength { expected, actual: proof.len() });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(MerkleError::WrongProofLength { expected, actual: proof.len() });
    }
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// `PROOF(m, D[n])` (RFC 6962 §2.1.2, RFC 9162 §2.1.4.1): proves that the tree
/// of the first `old_size` leaves is a prefix of the tree of all `leaves`.
///
/// The proof is empty when `old_size` is 0 (every tree extends the empty
/// tree) or equal to `leaves.len()` (the roots must simply be equal).
pub fn consistency_proof(leaves: &[Hash32], old_size: u64) -> Result<Vec<Hash32>, MerkleError> {
    consistency_proof_from(&mut Leaves(leaves), old_size, leaves.len() as u64)
}

/// [`consistency_proof`] over any [`NodeSource`] holding a tree of `new_size` leaves.
pub fn consistency_proof_from<S: NodeSource>(
    source: &mut S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash32>, S::Error> {
    if old_size > new_size {
        return Err(MerkleError::OldSizeExceedsNewSize { old_size, new_size }.into());
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // `SUBPROOF(m, D[lo:hi], b)` unrolled top-down; entries are collected and reversed at the end.
    let mut proof = Vec::with_capacity(consistency_proof_len(old_size, new_size));
    let (mut lo, mut hi, mut whole_old_tree) = (0, new_size, true);
    let m = old_size;
    loop {
        if m - lo == hi - lo {
            if !whole_old_tree {
                proof.push(range_root(source, lo, hi)?);
            }
            break;
        }
        let k = split_point(hi - lo);
        if m - lo <= k {
            proof.push(range_root(source, lo + k, hi)?);
            hi = lo + k;
        } else {
            proof.push(range_root(source, lo, lo + k)?);
            lo += k;
            whole_old_tree = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a prefix
/// of the tree of `new_size` leaves with root `new_root`, following RFC 9162
/// §2.1.4.2.
///
/// Equal sizes need an empty proof and equal roots. An `old_size` of 0 needs
/// an empty proof and `old_root` equal to [`empty_root`].
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash32,
    new_root: &Hash32,
    proof: &[Hash32],
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::OldSizeExceedsNewSize { old_size, new_size });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(MerkleError::WrongProofLength { expected: 0, actual: proof.len() });
        }
        if old_size == 0 && *old_root != empty_root() {
            return Err(MerkleError::OldRootMismatch);
        }
        if old_size == new_size && old_root != new_root {
            return Err(MerkleError::NewRootMismatch);
        }
        return Ok(());
    }

    let expected = consistency_proof_len(old_size, new_size);
    let wrong_length = MerkleError::WrongProofLength { expected, actual: proof.len() };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // Step 2: when the old tree is a perfect subtree, its root is the seed and
    // is not repeated in the proof.
    let (seed, rest) =
        if old_size.is_power_of_two() { (old_root, proof) } else { proof.split_first().ok_or(wrong_length.clone())? };
    let mut fn_ = old_size - 1;
    let mut sn = new_size - 1;
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = *seed;
    let mut sr = *seed;
    for c in rest {
        if sn == 0 {
            return Err(wrong_length);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(wrong_length);
    }
    if fr != *old_root {
        return Err(MerkleError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(MerkleError::NewRootMismatch);
    }
    Ok(())
}

/// The largest power of two strictly smaller than `n`; requires `n >= 2`.
fn split_point(n: u64) -> u64 {
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// Hashes in an inclusion proof for `index < tree_size`: the levels below the
/// point where the leaf's path and the tree's right border diverge, plus one
/// per left sibling along the border above it.
fn inclusion_proof_len(index: u64, tree_size: u64) -> usize {
    let inner = u64::BITS - (index ^ (tree_size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Hashes in a consistency proof for `0 < old_size < new_size`.
fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    let index = old_size - 1;
    let inner = u64::BITS - (index ^ (new_size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    // The levels under the old tree's own perfect subtree are not needed.
    let inner = inner.saturating_sub(old_size.trailing_zeros());
    let seed = u32::from(!old_size.is_power_of_two());
    (seed + inner + border) as usize
}

#[cfg(test)]
mod tests;
