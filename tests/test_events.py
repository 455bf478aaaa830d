"""The training-step scalar storage: what a forward records inside ``recording()``, and nothing outside."""

from maskrcnn.events import put_scalar, recording


def test_records_inside_and_not_outside():
    put_scalar("outside", 1.0)  # no storage open: dropped, no error
    with recording() as events:
        put_scalar("rpn/num_pos", 3)
        put_scalar("rpn/num_pos", 4)  # the last value of a step wins
        put_scalar("roi/cls_accuracy", 0.5)
    put_scalar("after", 2.0)
    assert events.scalars == {"rpn/num_pos": 4.0, "roi/cls_accuracy": 0.5}


def test_nested_blocks_write_to_the_innermost_and_close_on_error():
    with recording() as outer:
        try:
            with recording() as inner:
                put_scalar("a", 1.0)
                raise RuntimeError("a failing step")
        except RuntimeError:
            pass
        put_scalar("b", 2.0)
    assert inner.scalars == {"a": 1.0} and outer.scalars == {"b": 2.0}
