"""Stage-1 packing: one-segment and two-segment ([CLS] A [SEP] B [SEP]) blocks, and their segment ids."""

import pytest
import torch

from kroncli.data.corpus import load_corpus, pack, token_types
from kroncli.errors import KronError
from kroncli.stages.distill import MaskingCollate, PackedCollate

CLS, SEP = 101, 102
LINES = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14], [15, 16, 17, 18, 19, 20]]


def test_one_segment_blocks_keep_the_stream_in_order():
    rows = pack(LINES, 8, CLS, SEP)
    assert rows.tolist() == [[CLS, 5, 6, 7, 8, 9, 10, SEP], [CLS, 11, 12, 13, 14, 15, 16, SEP]]
    assert token_types(rows.long(), SEP).sum() == 0


def test_pairs_split_at_the_line_end_nearest_the_middle():
    rows = pack(LINES, 8, CLS, SEP, pairs=True)
    # 5 text tokens per row; line ends fall after tokens 3, 5, 9, 10 and 16 of the stream
    assert rows.tolist() == [[CLS, 5, 6, 7, SEP, 8, 9, SEP],        # line end after 7: the middle
                             [CLS, 10, 11, 12, 13, SEP, 14, SEP],   # the only line end inside the block
                             [CLS, 15, 16, SEP, 17, 18, 19, SEP]]   # no line end inside: cut at the middle
    assert token_types(rows.long(), SEP).tolist() == [[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1, 1],
                                                      [0, 0, 0, 0, 1, 1, 1, 1]]


def test_pairs_keep_every_token_once_and_both_segments_non_empty():
    g = torch.Generator().manual_seed(0)
    lines = [list(range(1000 + 50 * i, 1000 + 50 * i + int(n))) for i, n in
             enumerate(torch.randint(1, 40, (200,), generator=g))]
    rows = pack(lines, 32, CLS, SEP, pairs=True)
    stream = [t for line in lines for t in line]
    text = rows[:, 1:-1]
    assert text[text != SEP].tolist() == stream[: rows.shape[0] * 29]  # 32 - 3 special tokens per row
    assert ((rows == SEP).sum(1) == 2).all()
    inner = (rows[:, 1:-1] == SEP).long().argmax(1)
    assert (inner >= 1).all() and (inner <= 28).all()


def test_collates_give_segment_ids_and_mlm_leaves_separators(minilm_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    rows = list(pack(LINES, 8, tok.cls_token_id, tok.sep_token_id, pairs=True))
    batch = PackedCollate(tok.sep_token_id)(rows)
    assert batch["token_type_ids"].tolist()[0] == [0, 0, 0, 0, 0, 1, 1, 1]
    torch.manual_seed(0)
    masked = MaskingCollate(tok, probability=0.9)([rows[0]] * 20)
    assert masked["token_type_ids"].tolist()[0] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert (masked["input_ids"][:, [0, 4, 7]] == torch.tensor([tok.cls_token_id, tok.sep_token_id,
                                                              tok.sep_token_id])).all()


def test_cache_is_keyed_by_the_layout(tmp_path, minilm_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    text = tmp_path / "t.txt"
    text.write_text("\n".join(f"sentence number {i} is about a cat and a dog" for i in range(60)) + "\n")
    pairs = load_corpus([str(text)], tok, 24, tmp_path / "cache")
    single = load_corpus([str(text)], tok, 24, tmp_path / "cache", pairs=False)
    assert len(list((tmp_path / "cache").iterdir())) == 2
    assert ((pairs == tok.sep_token_id).sum(1) == 2).all() and ((single == tok.sep_token_id).sum(1) == 1).all()
    assert torch.equal(load_corpus([str(text)], tok, 24, tmp_path / "cache"), pairs)  # from the cache


def test_too_short_a_sequence_is_an_error():
    with pytest.raises(KronError, match="--max-seq-len"):
        pack(LINES, 4, CLS, SEP, pairs=True)


def test_compressed_text_reads_like_plain_text_and_a_cut_archive_is_named(tmp_path):
    import bz2
    import gzip
    import lzma

    from kroncli.data.corpus import _read_lines, corpus_files

    text = "the first line\n\nsecond line here\n"
    folder = tmp_path / "text"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(text)
    (folder / "sub" / "b.txt.gz").write_bytes(gzip.compress(text.encode()))
    (folder / "c.md.xz").write_bytes(lzma.compress(text.encode()))
    (folder / "d.tsv.bz2").write_bytes(bz2.compress(b"id\tsentence\n1\tone two\n2\tthree four\n"))
    (folder / "model.bin.gz").write_bytes(gzip.compress(b"\0\1"))  # not text: not picked up
    files = corpus_files([str(folder)])
    assert sorted(f.name for f in files) == ["a.txt", "b.txt.gz", "c.md.xz", "d.tsv.bz2"]
    lines = _read_lines(files)
    assert lines.count("the first line") == 3 and lines.count("second line here") == 3
    assert "one two" in lines and "three four" in lines and "id" not in lines

    direct = tmp_path / "notes.gz"  # a compressed file named directly needs no inner suffix
    direct.write_bytes(gzip.compress(text.encode()))
    assert _read_lines(corpus_files([str(direct)])) == ["the first line", "second line here"]

    binary = tmp_path / "weights.gz"
    binary.write_bytes(gzip.compress(b"\0" * 100))
    with pytest.raises(KronError, match="is not text"):
        corpus_files([str(binary)])
    cut = tmp_path / "cut.txt.gz"
    long_text = "".join(f"sentence {i} of {i * 7919 % 10007}\n" for i in range(5000)).encode()
    cut.write_bytes(gzip.compress(long_text)[:3000])
    with pytest.raises(KronError, match="cannot be read to its end"):
        _read_lines(corpus_files([str(cut)]))
    broken = tmp_path / "broken.txt.xz"
    broken.write_bytes(b"not xz at all")
    with pytest.raises(KronError, match="cannot be decompressed"):
        corpus_files([str(broken)])


def test_a_corpus_that_is_not_utf8_is_named_in_a_warning(tmp_path):
    import gzip

    from kroncli.data.corpus import _read_lines

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Le café crème à la façade, naïve et brûlée.\n".encode("latin-1") * 30)
    said = []
    lines = _read_lines([latin1], said.append)
    assert lines[0] == "Le caf\ufffd cr\ufffdme \ufffd la fa\ufffdade, na\ufffdve et br\ufffdl\ufffde."
    assert len(said) == 1 and str(latin1) in said[0] and "210 of 1,320 bytes" in said[0] and "iconv" in said[0]
    packed = tmp_path / "latin1.txt.gz"  # counted on the decompressed bytes
    packed.write_bytes(gzip.compress(latin1.read_bytes()))
    _read_lines([packed], said.append)
    assert len(said) == 2 and str(packed) in said[1] and "210 of 1,320 bytes" in said[1]
    with pytest.warns(UserWarning, match="not UTF-8"):  # no log: Python's warnings
        _read_lines([latin1])

    mostly = tmp_path / "utf8.txt"  # one stray byte in 24,000: below the 0.1% share, read without a word
    mostly.write_bytes("déjà vu, naïve café\n".encode() * 1000 + b"\xff\n")
    said.clear()
    assert _read_lines([mostly], said.append)[-1] == "\ufffd" and said == []


def test_a_missing_folder_written_with_a_slash_is_a_missing_folder_not_a_dataset_name(tmp_path, monkeypatch):
    """`corpus/` (the shipped recipes' stage-1 text) that is not there was taken for a datasets name: no error until
    stage 1 tried the hub, and a dry run said nothing was missing."""
    from kroncli.data.corpus import corpus_files

    monkeypatch.chdir(tmp_path)
    with pytest.raises(KronError, match="corpus file corpus does not exist"):
        corpus_files(["corpus/"])
    assert corpus_files(["wikitext"]) is None  # a bare name is still a datasets name
