"""Near-duplicate removal measured: recall and precision on planted duplicates, agreement with datatrove, time.

    python bench/clean.py [--documents 20000] [--datatrove]

The corpus is the built-in one's paragraphs of at least 30 words (real English), plus
an edited copy of a fifth of them (a word changed, a sentence dropped or a line
added, whitespace doubled). A pair is truly similar when the exact Jaccard
similarity of its word 5-gram sets is at least the threshold the params imply,
(1/bands)^(1/rows) ~ 0.72. With --datatrove (datatrove installed), its MinHash
pipeline (signature, buckets, cluster, filter; sha1 hashes, as its xxhash path fails
with xxhash 4.x, and a space-splitting word tokenizer, as NLTK's needs data from the
network) runs on the same documents with the same parameters, in the same process.
"""

import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from causal_lm_data.pipeline.clean import (  # noqa: E402
    CleanConfig,
    Clusters,
    band_keys,
    band_pairs,
    jaccard,
    ngram_hashes,
    permutations,
    signature,
    words_of,
)
from causal_lm_data.pipeline.readers import builtin_documents  # noqa: E402


def corpus(count: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    rng = random.Random(seed)
    originals = [text for text in builtin_documents() if len(text.split()) >= 30]
    originals = list(dict.fromkeys(originals))[:count]
    documents, planted = list(originals), []
    for index in rng.sample(range(len(originals)), len(originals) // 5):
        words = originals[index].split(" ")
        edit = rng.randrange(3)
        if edit == 0:
            words[rng.randrange(len(words))] = rng.choice(["nation", "people", "government", "year"])
        elif edit == 1:
            cut = rng.randrange(len(words) - 5)
            del words[cut : cut + 5]
        else:
            words.append("\nThank you.")
        planted.append((index, len(documents)))
        documents.append("  ".join(words) if rng.random() < 0.5 else " ".join(words))
    return documents, planted


def ours(documents: list[str], config: CleanConfig) -> tuple[set[int], float]:
    start = time.perf_counter()
    a, b = permutations(config)
    signatures, signed = [], []
    for text in documents:
        shingles = ngram_hashes(words_of(text), config.near_ngram)
        signed.append(len(shingles) > 0)
        signatures.append(signature(shingles, a, b) if len(shingles) else np.zeros(config.hashes, dtype=np.uint64))
    keys = band_keys(np.stack(signatures), config)
    clusters, alive = Clusters(len(documents)), np.array(signed)
    for band in range(config.near_bands):
        for first, other in zip(*band_pairs(keys[:, band], alive)):
            clusters.union(int(first), int(other))
    removed = {index for index in range(len(documents)) if clusters.find(index) != index}
    return removed, time.perf_counter() - start


def datatrove_removed(documents: list[str], config: CleanConfig) -> tuple[set[int], float]:
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Spaces(WordTokenizer):
        def word_tokenize(self, text):
            return text.split(" ") if text else []

        def sent_tokenize(self, text):
            return [text]

        def span_tokenize(self, text):
            return [(0, len(text))]

    minhash = MinhashConfig(
        n_grams=config.near_ngram,
        num_buckets=config.near_bands,
        hashes_per_bucket=config.near_rows,
        seed=config.near_seed,
        hash_config=HashConfig(precision=64, hash_fc="sha1"),
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        docs = [Document(text=text, id=str(index)) for index, text in enumerate(documents)]
        MinhashDedupSignature(f"{scratch}/sigs", config=minhash, language=Spaces()).run(iter(docs), 0, 1)
        for bucket in range(config.near_bands):
            MinhashDedupBuckets(f"{scratch}/sigs", f"{scratch}/buckets", config=minhash).run(None, bucket, config.near_bands)
        MinhashDedupCluster(f"{scratch}/buckets", f"{scratch}/remove_ids", config=minhash).run()
        kept = {int(doc.id) for doc in MinhashDedupFilter(f"{scratch}/remove_ids").run(iter(docs), 0, 1)}
    return set(range(len(documents))) - kept, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20000, help="originals taken from the built-in corpus")
    parser.add_argument("--datatrove", action="store_true", help="also run datatrove's MinHash pipeline")
    args = parser.parse_args()
    config = CleanConfig(near=True)
    documents, planted = corpus(args.documents)
    threshold = (1 / config.near_bands) ** (1 / config.near_rows)
    similar = {
        copy
        for original, copy in planted
        if jaccard(ngram_hashes(words_of(documents[original]), 5), ngram_hashes(words_of(documents[copy]), 5)) >= threshold
    }
    removed, seconds = ours(documents, config)
    copies = {copy for _, copy in planted}
    print(
        f"{len(documents):,} documents, {len(planted):,} planted copies, {len(similar):,} of them at Jaccard >= {threshold:.2f}"
    )
    print(
        f"ours: {seconds:.2f} s, removed {len(removed):,}; recall {len(similar & removed) / len(similar):.3f} of the similar copies;"
    )
    print(f"      precision {len(removed & copies) / max(1, len(removed)):.3f} (removed documents that are planted copies)")
    print(f"      peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.datatrove:
        theirs, their_seconds = datatrove_removed(documents, config)
        print(f"datatrove: {their_seconds:.2f} s, removed {len(theirs):,}; same removed set: {theirs == removed}")
        print(
            f"      only ours {len(removed - theirs)}, only datatrove's {len(theirs - removed)}; ours {their_seconds / seconds:.1f}x faster"
        )


if __name__ == "__main__":
    main()
