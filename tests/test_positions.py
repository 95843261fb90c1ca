from dlm_lsp.protocol.positions import line_starts, offset_at, position_at

EMOJI = "a😀b = 1\nx\n"


def test_utf16_columns_count_a_surrogate_pair_as_two_units():
    assert offset_at(EMOJI, 0, 3, "utf-16") == EMOJI.index("b")
    assert position_at(EMOJI, EMOJI.index("b"), "utf-16") == (0, 3)


def test_utf8_columns_count_bytes():
    assert offset_at(EMOJI, 0, 5, "utf-8") == EMOJI.index("b")
    assert position_at(EMOJI, EMOJI.index("b"), "utf-8") == (0, 5)


def test_column_inside_a_surrogate_pair_stays_before_the_character():
    assert offset_at(EMOJI, 0, 2, "utf-16") == 1


def test_crlf_lines_and_clamping_at_line_end():
    text = "ab\r\ncd\r\n"
    assert line_starts(text) == (0, 4, 8)
    assert offset_at(text, 1, 1) == 5
    assert offset_at(text, 0, 99) == 2  # past the end of the line: before "\r\n"
    assert position_at(text, 3) == (0, 2)  # between \r and \n belongs to the line end


def test_positions_past_the_document_are_clamped():
    text = "one\ntwo"
    assert offset_at(text, 10, 0) == len(text)
    assert offset_at(text, -1, -5) == 0
    assert position_at(text, 1000) == (1, 3)


def test_lone_cr_is_a_line_break_but_form_feed_is_not():
    text = "a\rb\x0cc\nd"
    assert line_starts(text) == (0, 2, 6)
