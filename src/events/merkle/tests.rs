use super::*;

/// The RFC 6962 test leaves used by certificate-transparency-go and
/// transparency-dev/merkle. They are raw leaf data, not 32-byte event
/// hashes, so they are hashed with this helper instead of [`leaf_hash`].
const CT_LEAVES: [&str; 8] =
    ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];

/// Roots of the first n CT leaves, n = 0..=8.
const CT_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn h(s: &str) -> Hash32 {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn raw_leaf_hash(data: &[u8]) -> Hash32 {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_PREFIX]);
    hasher.update(data);
    hasher.finalize().into()
}

fn ct_leaves() -> Vec<Hash32> {
    CT_LEAVES.iter().map(|s| raw_leaf_hash(&hex::decode(s).unwrap())).collect()
}

/// Distinct leaf hashes for property tests.
fn leaves(n: usize) -> Vec<Hash32> {
    (0..n as u64).map(|i| leaf_hash(&Sha256::digest(i.to_be_bytes()).into())).collect()
}

/// RFC 6962 §2.1 MTH, written straight from the recursive definition.
fn reference_root(d: &[Hash32]) -> Hash32 {
    match d.len() {
        0 => empty_root(),
        1 => d[0],
        n => {
            let k = n.next_power_of_two() / 2;
            node_hash(&reference_root(&d[..k]), &reference_root(&d[k..]))
        }
    }
}

fn flip(hash: &Hash32) -> Hash32 {
    let mut out = *hash;
    out[7] ^= 0x10;
    out
}

#[test]
fn hash_primitives() {
    assert_eq!(empty_root(), h(CT_ROOTS[0]));
    let event = [0xab; 32];
    let mut leaf_input = vec![0x00];
    leaf_input.extend_from_slice(&event);
    assert_eq!(leaf_hash(&event), <Hash32>::from(Sha256::digest(&leaf_input)));
    let (l, r) = ([1; 32], [2; 32]);
    let mut node_input = vec![0x01];
    node_input.extend_from_slice(&l);
    node_input.extend_from_slice(&r);
    assert_eq!(node_hash(&l, &r), <Hash32>::from(Sha256::digest(&node_input)));
    assert_ne!(node_hash(&l, &r), node_hash(&r, &l));
}

#[test]
fn ct_known_roots() {
    let leaves = ct_leaves();
    let mut acc = MerkleAccumulator::new();
    for (n, expected) in CT_ROOTS.iter().enumerate() {
        assert_eq!(root(&leaves[..n]), h(expected), "root() of size {n}");
        assert_eq!(acc.root(), h(expected), "accumulator of size {n}");
        if n < leaves.len() {
            acc.push(leaves[n]);
        }
    }
    assert_eq!(hex::encode(root(&leaves)), "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328");
}

#[test]
fn ct_known_inclusion_proofs() {
    let leaves = ct_leaves();
    // (0-based index, tree size, proof) from certificate-transparency-go.
    let vectors: [(u64, usize, &[&str]); 5] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (index, size, expected) in vectors {
        let expected: Vec<Hash32> = expected.iter().map(|s| h(s)).collect();
        let proof = inclusion_proof(&leaves[..size], index).unwrap();
        assert_eq!(proof, expected, "inclusion proof for {index} in {size}");
        let tree_root = h(CT_ROOTS[size]);
        verify_inclusion(&leaves[index as usize], index, size as u64, &proof, &tree_root).unwrap();
    }
}

#[test]
fn ct_known_consistency_proofs() {
    let leaves = ct_leaves();
    let vectors: [(u64, usize, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (old, new, expected) in vectors {
        let expected: Vec<Hash32> = expected.iter().map(|s| h(s)).collect();
        let proof = consistency_proof(&leaves[..new], old).unwrap();
        assert_eq!(proof, expected, "consistency proof {old} -> {new}");
        let (old_root, new_root) = (h(CT_ROOTS[old as usize]), h(CT_ROOTS[new]));
        verify_consistency(old, new as u64, &old_root, &new_root, &proof).unwrap();
    }
}

#[test]
fn root_and_accumulator_match_the_definition_for_every_size() {
    let leaves = leaves(70);
    let mut acc = MerkleAccumulator::new();
    for n in 0..=leaves.len() {
        let expected = reference_root(&leaves[..n]);
        assert_eq!(root(&leaves[..n]), expected, "root() of size {n}");
        assert_eq!(acc.size(), n as u64);
        assert_eq!(acc.root(), expected, "accumulator of size {n}");
        assert_eq!(acc.peaks().len(), n.count_ones() as usize);
        let restored = MerkleAccumulator::from_peaks(acc.size(), acc.peaks().to_vec()).unwrap();
        assert_eq!(restored, acc);
        if n < leaves.len() {
            acc.push(leaves[n]);
        }
    }
}

#[test]
fn accumulator_state_is_validated() {
    assert_eq!(
        MerkleAccumulator::from_peaks(5, vec![[0; 32]]),
        Err(MerkleError::InvalidAccumulatorState { size: 5, expected: 2, actual: 1 })
    );
    assert_eq!(MerkleAccumulator::from_peaks(0, vec![]), Ok(MerkleAccumulator::new()));
}

#[test]
fn large_tree_root_matches_accumulator() {
    // Odd size, so promotion of a lone node happens on several levels.
    let leaves = leaves(100_003);
    let mut acc = MerkleAccumulator::new();
    for leaf in &leaves {
        acc.push(*leaf);
    }
    assert_eq!(root(&leaves), acc.root());
    assert_eq!(root(&leaves), reference_root(&leaves));
}

#[test]
fn every_inclusion_proof_verifies_and_tampering_fails() {
    let all = leaves(40);
    for n in 1..=all.len() {
        let tree = &all[..n];
        let size = n as u64;
        let tree_root = root(tree);
        for i in 0..n {
            let index = i as u64;
            let proof = inclusion_proof(tree, index).unwrap();
            assert_eq!(proof.len(), inclusion_proof_len(index, size));
            verify_inclusion(&tree[i], index, size, &proof, &tree_root).unwrap();

            // A different leaf.
            assert!(verify_inclusion(&flip(&tree[i]), index, size, &proof, &tree_root).is_err());
            if n > 1 {
                let other = &tree[(i + 1) % n];
                assert!(verify_inclusion(other, index, size, &proof, &tree_root).is_err());
            }
            // Every different index, and one past the end.
            for j in 0..=size {
                if j != index {
                    assert!(
                        verify_inclusion(&tree[i], j, size, &proof, &tree_root).is_err(),
                        "leaf {i} of {n} verified at index {j}"
                    );
                }
            }
            // A wrong root.
            assert_eq!(
                verify_inclusion(&tree[i], index, size, &proof, &flip(&tree_root)),
                Err(MerkleError::RootMismatch)
            );
            // A truncated, an extended, and a tampered proof.
            if let Some((_, shorter)) = proof.split_last() {
                assert!(matches!(
                    verify_inclusion(&tree[i], index, size, shorter, &tree_root),
                    Err(MerkleError::WrongProofLength { .. })
                ));
            }
            let mut longer = proof.clone();
            longer.push(tree_root);
            assert!(verify_inclusion(&tree[i], index, size, &longer, &tree_root).is_err());
            for k in 0..proof.len() {
                let mut tampered = proof.clone();
                tampered[k] = flip(&tampered[k]);
                assert_eq!(
                    verify_inclusion(&tree[i], index, size, &tampered, &tree_root),
                    Err(MerkleError::RootMismatch)
                );
            }
            if proof.len() >= 2 && proof[0] != proof[1] {
                let mut swapped = proof.clone();
                swapped.swap(0, 1);
                assert!(verify_inclusion(&tree[i], index, size, &swapped, &tree_root).is_err());
            }
        }
    }
}

#[test]
fn inclusion_errors() {
    let tree = leaves(5);
    assert_eq!(inclusion_proof(&tree, 5), Err(MerkleError::IndexOutOfRange { index: 5, tree_size: 5 }));
    assert_eq!(inclusion_proof(&[], 0), Err(MerkleError::IndexOutOfRange { index: 0, tree_size: 0 }));
    assert_eq!(inclusion_proof(&tree, u64::MAX), Err(MerkleError::IndexOutOfRange { index: u64::MAX, tree_size: 5 }));
    assert_eq!(
        verify_inclusion(&tree[0], 0, 0, &[], &empty_root()),
        Err(MerkleError::IndexOutOfRange { index: 0, tree_size: 0 })
    );
    assert_eq!(
        verify_inclusion(&tree[0], 0, 5, &[], &root(&tree)),
        Err(MerkleError::WrongProofLength { expected: 3, actual: 0 })
    );
    // Extreme sizes must not overflow the length computation.
    assert_eq!(inclusion_proof_len(u64::MAX - 1, u64::MAX), 63);
    assert_eq!(inclusion_proof_len(0, u64::MAX), 64);
    assert!(verify_inclusion(&tree[0], 1 << 63, u64::MAX, &[[0; 32]; 64], &[0; 32]).is_err());
}

#[test]
fn every_consistency_proof_verifies_and_tampering_fails() {
    let all = leaves(40);
    let roots: Vec<Hash32> = (0..=all.len()).map(|n| root(&all[..n])).collect();
    for n in 1..=all.len() {
        for m in 1..=n {
            let (old, new) = (m as u64, n as u64);
            let (old_root, new_root) = (roots[m], roots[n]);
            let proof = consistency_proof(&all[..n], old).unwrap();
            if m < n {
                assert_eq!(proof.len(), consistency_proof_len(old, new));
            } else {
                assert!(proof.is_empty());
            }
            verify_consistency(old, new, &old_root, &new_root, &proof).unwrap();

            assert!(verify_consistency(old, new, &flip(&old_root), &new_root, &proof).is_err());
            assert!(verify_consistency(old, new, &old_root, &flip(&new_root), &proof).is_err());
            if m < n {
                assert!(verify_consistency(old, new, &new_root, &old_root, &proof).is_err());
                assert!(verify_consistency(new, old, &new_root, &old_root, &proof).is_err());
                assert!(verify_consistency(old, new, &old_root, &new_root, &[]).is_err());
            }
            if let Some((_, shorter)) = proof.split_last() {
                assert!(verify_consistency(old, new, &old_root, &new_root, shorter).is_err());
            }
            let mut longer = proof.clone();
            longer.push(new_root);
            assert!(verify_consistency(old, new, &old_root, &new_root, &longer).is_err());
            let mut prefixed = vec![old_root];
            prefixed.extend_from_slice(&proof);
            assert!(verify_consistency(old, new, &old_root, &new_root, &prefixed).is_err());
            for k in 0..proof.len() {
                let mut tampered = proof.clone();
                tampered[k] = flip(&tampered[k]);
                assert!(
                    verify_consistency(old, new, &old_root, &new_root, &tampered).is_err(),
                    "tampered hash {k} of {m} -> {n} verified"
                );
            }
            // The same proof must not pass for neighbouring sizes.
            for (m2, n2) in [(m - 1, n), (m + 1, n), (m, n + 1), (m, n - 1)] {
                if (m2, n2) != (m, n) && m2 >= 1 && m2 <= n2 && n2 <= all.len() {
                    let r = verify_consistency(m2 as u64, n2 as u64, &roots[m2], &roots[n2], &proof);
                    if m2 < n2 {
                        assert!(r.is_err(), "proof {m} -> {n} verified as {m2} -> {n2}");
                    }
                }
            }
        }
    }
}

#[test]
fn consistency_edge_cases() {
    let tree = leaves(8);
    let r8 = root(&tree);
    assert_eq!(consistency_proof(&tree, 0).unwrap(), Vec::<Hash32>::new());
    verify_consistency(0, 8, &empty_root(), &r8, &[]).unwrap();
    verify_consistency(0, 0, &empty_root(), &empty_root(), &[]).unwrap();
    assert_eq!(verify_consistency(0, 8, &r8, &r8, &[]), Err(MerkleError::OldRootMismatch));
    assert_eq!(
        verify_consistency(0, 8, &empty_root(), &r8, &[r8]),
        Err(MerkleError::WrongProofLength { expected: 0, actual: 1 })
    );
    assert_eq!(verify_consistency(8, 8, &r8, &flip(&r8), &[]), Err(MerkleError::NewRootMismatch));
    assert_eq!(
        verify_consistency(8, 8, &r8, &r8, &[r8]),
        Err(MerkleError::WrongProofLength { expected: 0, actual: 1 })
    );
    assert_eq!(consistency_proof(&tree, 9), Err(MerkleError::OldSizeExceedsNewSize { old_size: 9, new_size: 8 }));
    assert_eq!(
        verify_consistency(9, 8, &r8, &r8, &[]),
        Err(MerkleError::OldSizeExceedsNewSize { old_size: 9, new_size: 8 })
    );
    assert!(verify_consistency(3, u64::MAX, &r8, &r8, &[r8; 3]).is_err());
}

/// Counts what proof generation asks of its source.
struct Counting<'a> {
    leaves: Leaves<'a>,
    reads: usize,
}

impl NodeSource for Counting<'_> {
    type Error = MerkleError;
    fn node(&mut self, level: u32, index: u64) -> Result<Hash32, MerkleError> {
        self.reads += 1;
        self.leaves.node(level, index)
    }
}

#[test]
fn proofs_over_a_node_source_read_logarithmically_many_nodes() {
    let d = leaves(100_003);
    let n = d.len() as u64;
    for index in [0, 1, 255, 65_536, 99_999, n - 1] {
        let mut source = Counting { leaves: Leaves(&d), reads: 0 };
        let proof = inclusion_proof_from(&mut source, index, n).unwrap();
        verify_inclusion(&d[index as usize], index, n, &proof, &root(&d)).unwrap();
        // Each proof entry is a perfect node or a right-border range of at most log2(n) of them.
        assert!(source.reads <= 2 * 17 + 17, "{} reads for leaf {index}", source.reads);
    }
    for old in [1, 2, 1000, 65_536, 99_999, n - 1] {
        let mut source = Counting { leaves: Leaves(&d), reads: 0 };
        let proof = consistency_proof_from(&mut source, old, n).unwrap();
        verify_consistency(old, n, &root(&d[..old as usize]), &root(&d), &proof).unwrap();
        assert!(source.reads <= 3 * 17 + 17, "{} reads from size {old}", source.reads);
    }
    let mut source = Counting { leaves: Leaves(&d), reads: 0 };
    assert_eq!(range_root(&mut source, 0, n).unwrap(), root(&d));
    assert_eq!(source.reads as u32, n.count_ones());
}
