"""The WordNet text extractor for stage-1 corpora."""

from kroncli.data.wordnet import main, synset_line

LICENCE = "  1 This software and database is being provided to you, the LICENSEE, by Princeton University\n"
NOUN = ('02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 023 @ 02083346 n 0000 | a member of the '
        'genus Canis; "the dog barked all night"\n')
ADJ = '00001740 00 a 01 able(a) 0 005 = 05207437 n 0000 | (usually followed by `to\') having the necessary means\n'


def test_synset_lines_become_text():
    assert synset_line(LICENCE) is None
    assert synset_line(NOUN) == ("dog, domestic dog, Canis familiaris: a member of the genus Canis. "
                                 "the dog barked all night.")
    assert synset_line(ADJ) == "able: (usually followed by `to') having the necessary means."
    assert synset_line("garbage | x\n") is None


def test_main_writes_a_corpus_and_refuses_a_folder_without_data(tmp_path, capsys):
    (tmp_path / "data.noun").write_text(LICENCE + NOUN)
    (tmp_path / "data.adj").write_text(ADJ)
    out = tmp_path / "corpus.txt"
    assert main([str(tmp_path), str(out)]) == 0
    assert out.read_text().splitlines()[0].startswith("dog, domestic dog")
    assert len(out.read_text().splitlines()) == 2
    assert main([str(tmp_path / "nope"), str(out)]) == 2
    assert "wordnet-base" in capsys.readouterr().err
