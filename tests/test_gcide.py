"""The GCIDE (dict-gcide) text extractor for stage-1 corpora."""

import gzip

from kroncli.data.gcide import b64_number, entry_text, main

AFFECT = ('Affect \\Af*fect"\\, v. t. [imp. & p. p. {Affected}; p. pr. & vb.\n'
          '   n. {Affecting}.] [L. affectus, p. p. of afficere; AS. [=a]f?ran. See {Fact}.]\n'
          '   1. To act upon; to produce an effect or change upon.\n'
          '      [1913 Webster]\n\n'
          '            The climate affected their health and spirits.\n'
          '                                                  --Macaulay.\n'
          '      [1913 Webster]\n\n'
          '   Syn: influence, move.\n        [WordNet 1.5]\n\n')
COMPUTER = ('Computer \\Com*put"er\\, n.\n'
            '   2. (Computers) an electronic device for performing\n'
            '      calculations automatically. --Shak.\n\n'
            '   Note: Types are called {analog computer} and {digital computer}.\n      [PJC]\n\n')
EMPTY = 'Zythem \\Zy"them\\, n.\n   [1913 Webster]\n\n'


def _b64(n: int) -> str:
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out = digits[n % 64] + out
        n //= 64
        if not n:
            return out


def test_dictd_numbers_are_base64_most_significant_first():
    assert b64_number("A") == 0 and b64_number("Kj") == 10 * 64 + 35
    assert all(b64_number(_b64(n)) == n for n in (0, 63, 64, 4095, 123456789))


def test_entries_become_sentences_without_markup():
    assert entry_text(AFFECT) == ("Affect: To act upon; to produce an effect or change upon. "
                                  "The climate affected their health and spirits.")
    assert entry_text(COMPUTER) == ("Computer: an electronic device for performing calculations automatically. "
                                    "Types are called analog computer and digital computer.")
    assert entry_text(EMPTY) is None
    assert entry_text("no head line here\n") is None


def test_main_reads_the_index_skips_duplicates_and_refuses_a_folder_without_data(tmp_path, capsys):
    entries = [AFFECT, COMPUTER, EMPTY]
    data = "".join(entries).encode()
    starts = [sum(len(e.encode()) for e in entries[:i]) for i in range(len(entries))]
    index = [("00-database-info", 0, 5), ("Affect", starts[0], len(AFFECT)), ("Affected", starts[0], len(AFFECT)),
             ("Computer", starts[1], len(COMPUTER)), ("Zythem", starts[2], len(EMPTY))]
    with gzip.open(tmp_path / "gcide.dict.dz", "wb") as f:
        f.write(data)
    (tmp_path / "gcide.index").write_text("".join(f"{w}\t{_b64(o)}\t{_b64(n)}\n" for w, o, n in index))
    out = tmp_path / "corpus.txt"
    assert main([str(tmp_path), str(out)]) == 0
    lines = out.read_text().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["Affect", "Computer"]  # Affected shares Affect's entry
    assert main([str(tmp_path / "nope"), str(out)]) == 2
    assert "dict-gcide" in capsys.readouterr().err
