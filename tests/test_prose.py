"""The documentation-prose extractor for stage-1 corpora (reST, POD, HTML, Mallard, JSON, plain text, gzipped)."""

import gzip
import json

from kroncli.data.prose import html_paragraphs, is_prose, json_paragraphs, main, pod_paragraphs, rst_paragraphs

RST = """\
Logging facility
================

.. function:: getLogger(name=None)

   Return a logger with the specified name, creating it if necessary.  The
   :class:`~logging.Logger` it returns is shared by every caller that asks for the same name.

   For example::

      logger = logging.getLogger(__name__)
      logger.warning("The disk is almost full; free some space first.")

   This sentence comes after the literal block and is kept by the extractor.

* A list item that is long enough to be a sentence of its own, with ``code`` inside.
* Short item.

See `the tutorial <https://docs.python.org/>`_ for a gentle introduction to the whole module.
"""

POD = """\
=head1 NAME

perlintro - a brief introduction and overview of Perl

=head1 DESCRIPTION

This document is intended to give you a quick overview of the B<Perl> programming
language, along with pointers to further documentation like L<perlfunc|perlfunc>.

    my $animal = "camel";
    print "The animal is a $animal.\\n";

Perl variables come in three main types: scalars, arrays, and C<< hashes >> of values.

=cut
"""

HTML = """<html><body><h1>Chapter 1</h1>
<p>The Debian project is an association of individuals who share the goal of a free operating system.</p>
<pre>apt-get install something that looks like a sentence but is inside a pre block.</pre>
<div class="para">Each package declares its dependencies, and the tools resolve them when you install it.</div>
<table><tr><td><p>Tables hold reference data and are dropped even when a cell reads like a sentence.</p></td></tr></table>
<ul><li>Each list item becomes one paragraph when it is a whole sentence about something.</li></ul>
<p>Fish &amp; chips are served with vinegar and a great deal of salt in most places.</p>
</body></html>"""


def test_is_prose_keeps_sentences_and_drops_code_tables_and_fragments():
    assert is_prose("The quick brown fox jumps over the lazy dog every single morning.")
    assert not is_prose("Short sentence only.")  # fewer than 8 words
    assert not is_prose("the sentence starts in lower case and so it is a fragment of something.")
    assert not is_prose("A sentence without an end that goes on and on and on and on")
    assert not is_prose("if (x == 0) { return y; } else { x = x + 1; y = y * 2; } // done here.")
    assert not is_prose("N: Rik Faith E: faith@acm.org D: SCSI driver D: APM 0x1f 0x2e 0x3d 0x4c 0x5b.")


def test_rst_paragraphs_dedent_descriptions_and_drop_literal_blocks():
    paras = [p for p in rst_paragraphs(RST) if is_prose(p)]
    assert paras == [
        "Return a logger with the specified name, creating it if necessary.  The Logger it returns is shared "
        "by every caller that asks for the same name.",
        "This sentence comes after the literal block and is kept by the extractor.",
        "A list item that is long enough to be a sentence of its own, with code inside.",
        "See the tutorial for a gentle introduction to the whole module.",
    ]
    assert not any("getLogger" in p or "disk is almost full" in p for p in rst_paragraphs(RST))


def test_pod_paragraphs_drop_commands_and_verbatim_code():
    paras = list(pod_paragraphs(POD))
    assert "This document is intended to give you a quick overview of the Perl programming language, along " \
           "with pointers to further documentation like perlfunc." in paras
    assert "Perl variables come in three main types: scalars, arrays, and hashes of values." in paras
    assert not any("camel" in p or "NAME" in p or "=head1" in p for p in paras)


def test_html_paragraphs_read_p_li_and_docbook_divs_but_not_pre_or_tables():
    paras = list(html_paragraphs(HTML))
    assert paras == [
        "The Debian project is an association of individuals who share the goal of a free operating system.",
        "Each package declares its dependencies, and the tools resolve them when you install it.",
        "Each list item becomes one paragraph when it is a whole sentence about something.",
        "Fish & chips are served with vinegar and a great deal of salt in most places.",
    ]


MALLARD = """<page xmlns="http://projectmallard.org/1.0/" type="topic" id="a11y-bouncekeys">
  <info><desc>Ignore quickly-repeated key presses of the same key.</desc></info>
  <title>Turn on bounce keys</title>
  <p>Turn on bounce keys to ignore key presses that are rapidly repeated by the same hand.</p>
  <steps><item><p>Open the <gui>Activities</gui> overview and start typing the name of the panel.</p></item></steps>
  <code>gsettings set org.gnome.desktop.a11y.keyboard bouncekeys-enable true</code>
</page>"""


def test_mallard_help_pages_are_read_like_html(tmp_path, capsys):
    (tmp_path / "help").mkdir()
    (tmp_path / "help" / "a11y-bouncekeys.page").write_text(MALLARD)
    out = tmp_path / "prose.txt"
    assert main([str(tmp_path / "help"), str(out)]) == 0
    assert out.read_text().splitlines() == [
        "Turn on bounce keys to ignore key presses that are rapidly repeated by the same hand.",
        "Open the Activities overview and start typing the name of the panel.",
    ]


def test_json_string_values_in_document_order_and_a_broken_file_yields_nothing(tmp_path, capsys):
    doc = [{"id": "pickup", "description": "A rusty old pickup truck, its tires flat and its windows long gone.",
            "flags": ["NO_SALVAGE"], "weight": 1200},
           {"dialogue": {"text": "Hello   there, stranger.  Have you seen the road north of the river?",
                         "responses": ["Yes.", "No, I came from the south this morning and saw nobody at all."]}}]
    assert list(json_paragraphs(json.dumps(doc))) == [
        "pickup", "A rusty old pickup truck, its tires flat and its windows long gone.", "NO_SALVAGE",
        "Hello there, stranger. Have you seen the road north of the river?", "Yes.",
        "No, I came from the south this morning and saw nobody at all."]
    assert list(json_paragraphs('{"description": "cut off')) == []
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "vehicles.json").write_text(json.dumps(doc))
    (tmp_path / "data" / "broken.json").write_text('{"description": "cut off')
    out = tmp_path / "prose.txt"
    assert main([str(tmp_path / "data"), str(out)]) == 0
    assert out.read_text().splitlines() == [
        "A rusty old pickup truck, its tires flat and its windows long gone.",
        "Hello there, stranger. Have you seen the road north of the river?",
        "No, I came from the south this morning and saw nobody at all."]


def test_a_paragraph_differing_only_in_quotes_case_or_punctuation_is_kept_once(tmp_path):
    (tmp_path / "html").mkdir()
    (tmp_path / "html" / "page.html").write_text(
        "<p>The engine\u2019s connection pool keeps connections open between requests.</p>"
        "<p>The engine's Connection pool keeps connections open -- between requests!</p>"
        "<p>The engine's connection pool keeps sessions open between requests, too.</p>")
    out = tmp_path / "prose.txt"
    assert main([str(tmp_path / "html"), str(out)]) == 0
    assert out.read_text().splitlines() == [
        "The engine\u2019s connection pool keeps connections open between requests.",
        "The engine's connection pool keeps sessions open between requests, too."]


def test_main_walks_a_folder_gunzips_dedupes_and_refuses_one_without_prose(tmp_path, capsys):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "guide.rst").write_text(RST)
    with gzip.open(docs / "sub" / "guide-copy.txt.gz", "wt") as f:
        f.write(RST)  # the same text again, gzipped: nothing new
    (docs / "intro.pod").write_text(POD)
    (docs / "book.html").write_text(HTML)
    (docs / "logo.png").write_bytes(b"\x89PNG\0\0binary")
    out = tmp_path / "prose.txt"
    assert main([str(docs), str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == len(set(lines)) == 4 + 4 + 2
    assert all(is_prose(line) for line in lines)

    code_only = tmp_path / "code"
    code_only.mkdir()
    (code_only / "x.rst").write_text("x = 1\n\ny = 2\n")
    assert main([str(code_only), str(out)]) == 2
    assert "no English prose" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), str(out)]) == 2
    assert "apt-get download" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 10  # a failed run leaves the earlier corpus as it was


def test_several_sources_are_read_in_order_without_repeating_a_paragraph(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "book.html").write_text(HTML)
    (tmp_path / "b" / "intro.pod").write_text(POD)
    (tmp_path / "b" / "book-again.html").write_text(HTML)
    out = tmp_path / "prose.txt"
    assert main([str(tmp_path / "b"), str(tmp_path / "a"), str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 6 and lines[0].startswith("The Debian project")  # b's files in path order, a adds nothing
    assert main([str(tmp_path / "a"), str(tmp_path / "nope"), str(out)]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    assert main([str(out)]) == 2  # no source at all: the usage line
