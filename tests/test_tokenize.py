import numpy as np
import pyarrow as pa

from stages.tokenize import id_type, to_list_array, truncate


def test_ids_use_the_smallest_unsigned_type():
    assert id_type(256) == pa.uint8()
    assert id_type(50_257) == pa.uint16()
    assert id_type(65_536) == pa.uint16()
    assert id_type(65_537) == pa.uint32()


def test_truncate_keeps_the_start_like_transformers():
    docs = [np.arange(10), np.arange(3), np.arange(0)]
    assert [d.tolist() for d in truncate(docs, 4)] == [[0, 1, 2, 3], [0, 1, 2], []]
    assert [d.tolist() for d in truncate(docs, 4, side="left")] == [[6, 7, 8, 9], [0, 1, 2], []]
    assert truncate(docs, None) is docs


def test_list_array_round_trip():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 50_257, size=n, dtype=np.uint32) for n in [5, 0, 1, 700, 3]]
    array = to_list_array(docs, pa.uint16())
    assert array.type == pa.list_(pa.uint16())
    assert array.to_pylist() == [d.tolist() for d in docs]
    assert to_list_array([], pa.uint16()).to_pylist() == []
