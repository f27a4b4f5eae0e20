import numpy as np
import pyarrow as pa

from causal_lm_data.pipeline.tokenized import id_type, shape_documents, to_list_array


def test_ids_use_the_smallest_unsigned_type():
    assert id_type(256) == pa.uint8()
    assert id_type(50_257) == pa.uint16()
    assert id_type(65_536) == pa.uint16()
    assert id_type(65_537) == pa.uint32()


def flat(docs):
    return np.concatenate(docs).astype(np.uint32), np.array([len(d) for d in docs], dtype=np.int64)


def unflat(ids, lengths):
    return [part.tolist() for part in np.split(ids, np.cumsum(lengths)[:-1])]


def test_truncation_keeps_the_start_like_transformers():
    docs = [np.arange(10), np.arange(3), np.arange(0)]
    assert unflat(*shape_documents(*flat(docs), 4)) == [[0, 1, 2, 3], [0, 1, 2], []]
    assert unflat(*shape_documents(*flat(docs), 4, side="left")) == [[6, 7, 8, 9], [0, 1, 2], []]
    assert unflat(*shape_documents(*flat(docs), None)) == [list(range(10)), [0, 1, 2], []]


def test_bos_and_eos_come_after_truncation():
    docs = [np.arange(10), np.arange(3), np.arange(0)]
    assert unflat(*shape_documents(*flat(docs), 4, bos=98, eos=99)) == [
        [98, 0, 1, 2, 3, 99],
        [98, 0, 1, 2, 99],
        [98, 99],
    ]
    assert unflat(*shape_documents(*flat(docs), None, eos=99)) == [list(range(10)) + [99], [0, 1, 2, 99], [99]]
    assert unflat(*shape_documents(*flat(docs), 2, side="left", bos=98)) == [[98, 8, 9], [98, 1, 2], [98]]


def test_list_array_round_trip():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 50_257, size=n, dtype=np.uint32) for n in [5, 0, 1, 700, 3]]
    array = to_list_array(*flat(docs), pa.uint16())
    assert array.type == pa.list_(pa.uint16())
    assert array.to_pylist() == [d.tolist() for d in docs]
    assert to_list_array(np.empty(0, np.uint32), np.empty(0, np.int64), pa.uint16()).to_pylist() == []
