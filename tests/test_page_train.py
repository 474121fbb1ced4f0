"""Train page through AppTest: a real 1-epoch run on digits, its live panel, and bad input."""

from __future__ import annotations

import time

from streamlit.testing.v1 import AppTest

import pytest

from aecore.lab import jobs
from aecore.paths import uploads_dir, user_models_dir
from aecore.store import load_model
from tests.helpers import no_native_bf16, open_app
from tests.test_lab_jobs import image_tree, image_zip

pytestmark = pytest.mark.usefixtures("no_job_left_running")   # tests/conftest.py


@pytest.fixture
def no_zoo(tmp_path, monkeypatch):
    """No pretrained models: the picker shows only what the test trains."""
    monkeypatch.setenv("AECORE_PRETRAINED", str(tmp_path / "pretrained"))


def page(timeout: float = 60) -> AppTest:
    return open_app("train.py", timeout=timeout)


def wait_for(at: AppTest, done, limit: float = 120) -> AppTest:
    """Rerun the page (as the live fragment would) until `done(at)` or the time is up."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        at.run()
        assert not at.exception, at.exception
        if done(at):
            return at
        time.sleep(0.3)
    raise AssertionError(f"page did not get there in {limit} s: {[m.value for m in at.main]}")


def test_train_a_tiny_model_and_find_it_in_the_picker(no_zoo):
    at = page()
    assert not at.exception
    assert at.selectbox(key="tr_model").value == "ae"
    at.radio(key="tr_data").set_value("digits").run()
    at.slider(key="tr_epochs").set_value(1).run()
    at.number_input(key="tr_latent").set_value(4).run()
    at.text_input(key="tr_name").set_value("page-digits").run()
    assert any("Training data: 1,438 images" in c.value for c in at.caption)
    at.button(key="tr_start").click().run()
    assert not at.exception and not at.error
    at = wait_for(at, lambda a: len(a.success) > 0)
    assert "Saved **page-digits**" in at.success[0].value and "model picker" in at.success[0].value
    # the sidebar now lists it, and selects it
    picker = at.selectbox(key="model")
    assert "page-digits (yours)" in picker.options and picker.value == "user:page-digits"
    assert at.selectbox(key="dataset").value == "digits"
    assert {m.label for m in at.metric} >= {"Test MSE / pixel", "PSNR", "Parameters"}
    assert len(at.get("plotly_chart")) == 2                          # the code map and the loss
    assert not at.button(key="tr_start").disabled
    # the run is the page's own: a fresh session does not see it
    other = page()
    assert not other.success and not other.get("plotly_chart")


@pytest.mark.skipif(jobs.bf16_problem() is not None, reason="no bfloat16 arithmetic on this machine")
def test_bfloat16_arithmetic_reaches_the_run_and_its_metrics(no_zoo):
    at = page()
    at.radio(key="tr_data").set_value("digits").run()
    at.slider(key="tr_epochs").set_value(1).run()
    at.text_input(key="tr_name").set_value("page-bf16").run()
    assert not at.checkbox(key="tr_bf16").disabled
    at.checkbox(key="tr_bf16").check().run()
    at.button(key="tr_start").click().run()
    at = wait_for(at, lambda a: len(a.success) > 0)
    assert load_model(user_models_dir() / "page-bf16").metrics["training"]["precision"] == "bf16"


def test_bfloat16_is_offered_only_where_the_machine_has_it(no_zoo, monkeypatch):
    no_native_bf16(monkeypatch)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    at = page()
    box = at.checkbox(key="tr_bf16")
    assert box.disabled and "no native bfloat16" in box.help


def test_bad_name_and_missing_upload_are_clear_errors(no_zoo, monkeypatch):
    monkeypatch.delenv("AECORE_FOLDER_ROOTS", raising=False)
    at = page()
    at.text_input(key="tr_name").set_value("no spaces please").run()
    at.button(key="tr_start").click().run()
    assert not at.exception
    assert "letters, digits, - and \\_ only" in at.error[0].value   # shown as plain text: "_" escaped
    at.text_input(key="tr_name").set_value("ok-name").run()
    at.radio(key="tr_data").set_value("your images…").run()
    at.button(key="tr_start").click().run()
    assert not at.exception and "Upload your images first" in at.error[0].value
    assert not jobs.active_jobs()


def test_no_roots_means_upload_only_and_a_note_for_the_operator(no_zoo, monkeypatch):
    monkeypatch.delenv("AECORE_FOLDER_ROOTS", raising=False)
    at = page()
    at.radio(key="tr_data").set_value("your images…").run()
    assert not at.exception and not at.error
    assert any("AECORE_FOLDER_ROOTS" in i.value for i in at.info)
    assert len(at.get("file_uploader")) == 1
    assert "tr_source" not in [r.key for r in at.radio]                  # no server folder to choose
    assert not {"tr_sub", "tr_folder"} & {t.key for t in at.text_input}
    assert "tr_root" not in [b.key for b in at.selectbox]
    uploader = at.get("file_uploader")[0]
    assert "at most 200 MB" in uploader.label and set(uploader.proto.type) >= {".zip", ".gz"}
    assert uploader.proto.max_upload_size_mb == 200


def test_with_roots_the_page_offers_them_and_refuses_a_way_out(no_zoo, tmp_path, monkeypatch):
    share = tmp_path / "share"
    image_tree(share / "mine")
    (tmp_path / "secret").mkdir()
    monkeypatch.setenv("AECORE_FOLDER_ROOTS", str(share))
    at = page()
    at.radio(key="tr_data").set_value("your images…").run()
    assert not any("AECORE_FOLDER_ROOTS" in i.value for i in at.info)
    at.radio(key="tr_source").set_value("a folder on this server").run()
    assert at.selectbox(key="tr_root").options == [str(share.resolve())]
    at.text_input(key="tr_name").set_value("escape").run()
    for sub in ("../secret", "/etc", "mine/../../secret"):
        at.text_input(key="tr_sub").set_value(sub).run()
        at.button(key="tr_start").click().run()
        assert not at.exception
        assert "outside the folders this server lets you read" in at.error[0].value, sub
        assert "Traceback" not in at.error[0].value
    at.text_input(key="tr_sub").set_value("nothing-here").run()
    at.button(key="tr_start").click().run()
    assert "does not exist" in at.error[0].value
    assert not jobs.active_jobs()
    # a subfolder of the share trains
    at.text_input(key="tr_sub").set_value("mine").run()
    at.select_slider(key="tr_fsize").set_value(16).run()
    at.toggle(key="tr_fgray").set_value(True).run()
    at.slider(key="tr_epochs").set_value(1).run()
    at.number_input(key="tr_latent").set_value(2).run()
    at.text_input(key="tr_name").set_value("shared-folder").run()
    at.button(key="tr_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at = wait_for(at, lambda a: len(a.success) > 0 or len(a.error) > 0)
    assert at.success and "Saved **shared-folder**" in at.success[0].value, [e.value for e in at.error]
    from pages.common import plain
    assert any(plain((share / "mine").resolve()) in c.value for c in at.caption)      # shown as plain text


def test_a_zip_upload_trains(no_zoo, monkeypatch):
    monkeypatch.delenv("AECORE_FOLDER_ROOTS", raising=False)
    at = page()
    at.radio(key="tr_data").set_value("your images…").run()
    at.get("file_uploader")[0].upload("my pics.zip", image_zip(), "application/zip").run()
    assert not at.exception and not at.error
    at.select_slider(key="tr_fsize").set_value(16).run()
    at.toggle(key="tr_fgray").set_value(True).run()
    at.slider(key="tr_epochs").set_value(1).run()
    at.number_input(key="tr_latent").set_value(2).run()
    at.text_input(key="tr_name").set_value("from-upload").run()
    at.button(key="tr_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    stored = list(uploads_dir().iterdir())
    assert len(stored) == 1 and jobs.UPLOAD_NAME_RE.fullmatch(stored[0].name)     # a random name, not 'my pics'
    at = wait_for(at, lambda a: len(a.success) > 0 or len(a.error) > 0)
    assert at.success and "Saved **from-upload**" in at.success[0].value, [e.value for e in at.error]
    assert any("your uploaded images" in c.value for c in at.caption)
    assert load_model(user_models_dir() / "from-upload").info["dataset"] == f"folder:{stored[0].resolve()}"
    # a second run on the same upload does not store it again
    at.button(key="tr_clear").click().run()
    at.text_input(key="tr_name").set_value("from-upload-again").run()
    at.button(key="tr_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(list(uploads_dir().iterdir())) == 1
    wait_for(at, lambda a: len(a.success) > 0)


def test_a_bad_upload_is_a_clear_error(no_zoo, monkeypatch):
    monkeypatch.delenv("AECORE_FOLDER_ROOTS", raising=False)
    at = page()
    at.radio(key="tr_data").set_value("your images…").run()
    at.get("file_uploader")[0].upload("evil.zip", b"#!/bin/sh\n" * 100, "application/zip").run()
    at.button(key="tr_start").click().run()
    assert not at.exception
    assert "not a .zip or .tar.gz" in at.error[0].value and "Traceback" not in at.error[0].value
    assert not jobs.active_jobs() and (not uploads_dir().exists() or not list(uploads_dir().iterdir()))


def test_model_options_follow_the_model(no_zoo):
    at = page()
    at.selectbox(key="tr_model").set_value("stacked-ae").run()
    assert at.toggle(key="tr_greedy").value is True
    assert at.slider(key="tr_stage_epochs").value == 2
    at.selectbox(key="tr_model").set_value("vae").run()
    strength = [n for n in at.number_input if n.key.startswith("tr_strength_vae")]
    assert strength and strength[0].value == 1.0 and "beta" in strength[0].label
    at.selectbox(key="tr_model").set_value("hyper-semi").run()
    assert at.select_slider(key="tr_labels").value == "100"
    at.selectbox(key="tr_noise").set_value("masking").run()
    assert at.slider(key="tr_level_masking").value == 0.5
    assert not at.exception and not at.error


def test_a_model_may_set_the_starting_code_size_and_epochs(no_zoo):
    """The rank-ordered AE's reference rule goes one example at a time: it asks for 100 units and one epoch
    (a working model within a minute); back on another model, the page's usual 32 and 5 return."""
    at = page()
    assert (at.number_input(key="tr_latent").value, at.slider(key="tr_epochs").value) == (32, 5)
    at.selectbox(key="tr_model").set_value("rank-ordered-ae").run()
    assert (at.number_input(key="tr_latent").value, at.slider(key="tr_epochs").value) == (100, 1)
    at.selectbox(key="tr_model").set_value("ae").run()
    assert (at.number_input(key="tr_latent").value, at.slider(key="tr_epochs").value) == (32, 5)
    assert at.select_slider(key="tr_lr").value == 1e-3
    # the conv AE starts at lr 3e-3: its Gaussian-0.5 denoiser then gains +8 dB within 5 epochs (issue 19)
    at.selectbox(key="tr_model").set_value("conv-ae").run()
    assert at.select_slider(key="tr_lr").value == 3e-3 and at.slider(key="tr_epochs").value == 5
    at.selectbox(key="tr_model").set_value("ae").run()
    assert at.select_slider(key="tr_lr").value == 1e-3
    assert not at.exception and not at.error



def after_another_page(at: AppTest, query: dict) -> AppTest:
    """The visitor of `at` comes back to the Train page by a link (`query`) from another page: Streamlit
    dropped the page's widget values on the way, only what pages.common keeps for a visitor is left."""
    from pages.common import KEPT

    back = AppTest.from_file(at._script_path, default_timeout=60)
    back.session_state[KEPT] = dict(at.session_state[KEPT])
    back.query_params.update(query)
    back.run()
    assert not back.exception and not back.error
    return back


def test_a_link_to_another_architecture_starts_from_its_own_settings(no_zoo):
    """A visitor who set up an `ae` run, then follows a link to the conv AE, gets the conv AE's lr (3e-3),
    not the ae's kept 1e-3; what the link itself says stands; the same architecture keeps the visitor's."""
    at = page()
    assert at.selectbox(key="tr_model").value == "ae" and at.select_slider(key="tr_lr").value == 1e-3
    at.number_input(key="tr_latent").set_value(7).run()
    at = after_another_page(at, {"tr_model": "conv-ae"})
    assert at.selectbox(key="tr_model").value == "conv-ae"
    assert at.select_slider(key="tr_lr").value == 3e-3
    assert (at.number_input(key="tr_latent").value, at.slider(key="tr_epochs").value) == (32, 5)
    # the link's own values stand (lr 1e-3 on the conv AE); those it does not give are the conv AE's
    at.selectbox(key="tr_model").set_value("ae").run()
    at.number_input(key="tr_latent").set_value(7).run()
    at = after_another_page(at, {"tr_model": "conv-ae", "tr_lr": "0.001", "tr_epochs": "3"})
    assert at.selectbox(key="tr_model").value == "conv-ae"
    assert (at.select_slider(key="tr_lr").value, at.slider(key="tr_epochs").value) == (1e-3, 3)
    assert at.number_input(key="tr_latent").value == 32
    # a link to the architecture the visitor's settings are for keeps them
    at.select_slider(key="tr_lr").set_value(1e-2).run()
    at = after_another_page(at, {"tr_model": "conv-ae"})
    assert at.select_slider(key="tr_lr").value == 1e-2 and at.slider(key="tr_epochs").value == 3

def test_live_panel_and_stop_button(no_zoo):
    at = page()
    at.slider(key="tr_epochs").set_value(50).run()
    at.text_input(key="tr_name").set_value("long-run").run()
    at.button(key="tr_start").click().run()
    assert not at.exception and not at.error
    assert at.button(key="tr_start").disabled            # one run per tab at a time
    assert len(at.get("progress")) == 1
    assert any("does not stop the run" in c.value for c in at.caption)
    at.button(key="tr_stop").click().run()
    at = wait_for(at, lambda a: len(a.warning) > 0 or len(a.success) > 0)
    assert "nothing was saved" in at.warning[0].value or "Stopped by you" in at.warning[0].value
    assert not jobs.active_jobs()


# --- issue 17: one Model picker, the real number of images, one offline notice, a plain loss axis --------
def test_one_picker_is_labelled_model(tiny_zoo):
    at = page()
    assert not at.exception
    assert [s.key for s in at.selectbox if s.label == "Model"] == ["model"]       # the sidebar's: trained models
    assert at.selectbox(key="tr_model").label == "Architecture" and at.selectbox(key="tr_model").help


def test_the_images_offered_are_the_images_there(no_zoo):
    from aecore.data import load_dataset

    at = page()
    images = at.select_slider(key="tr_images")
    n = len(load_dataset("mnist", "train"))                        # offline: the bundled 10,000 test images
    assert images.options[-1] == f"{n:,}" and images.value == min(10_000, n)
    assert not any("60,000" in o for o in images.options)
    at.radio(key="tr_data").set_value("digits").run()
    images = at.select_slider(key="tr_images")
    assert images.options == ["1,000", "1,438"] and images.value == 1438        # 10,000 asked: all there is
    assert any("Training data: 1,438 images" in c.value and "at most 1,438 are used" in c.value for c in at.caption)
    at.select_slider(key="tr_images").set_value(1000).run()
    at.radio(key="tr_data").set_value("mnist").run()
    assert at.select_slider(key="tr_images").value == 1000 and not at.exception


def test_offline_notice_once_and_a_loss_axis_in_plain_words(no_zoo):
    at = page()
    notices = lambda a: [i.value for i in a.info if "bundled test split" in i.value]   # noqa: E731
    assert len(notices(at)) == 1 and "**" not in notices(at)[0]
    at.slider(key="tr_epochs").set_value(1).run()
    at.number_input(key="tr_latent").set_value(4).run()
    at.select_slider(key="tr_images").set_value(1000).run()
    at.text_input(key="tr_name").set_value("offline-mnist").run()
    at.button(key="tr_start").click().run()
    assert not at.exception and not at.error
    at = wait_for(at, lambda a: len(a.success) > 0)
    assert len(notices(at)) == 1                                   # the run's own copy is not shown again
    layout = loss_layout(at)
    assert layout["yaxis"]["title"]["text"] == jobs.LOSS_AXIS and "read-out" not in jobs.LOSS_AXIS
    about = next(c.value for c in at.caption if "What the loss is" in c.value)
    assert "squared error of the reconstruction, summed over the 784 pixel values" in about
    assert "not the per-pixel MSE of the other pages" in about
    shown = next(m.value for m in at.metric if m.label == "Test MSE / pixel")
    assert f"test MSE per pixel, the number the other pages show, is {shown}" in about


# --- issue 18: watch a model learn, with pause, step and resume --------------------------------------------
def layouts(at: AppTest) -> list[dict]:
    import json
    return [json.loads(c.proto.spec)["layout"] for c in at.get("plotly_chart")]


def loss_layout(at: AppTest) -> dict:
    return next(x for x in layouts(at) if x.get("yaxis", {}).get("title", {}).get("text") == jobs.LOSS_AXIS)


def map_layout(at: AppTest) -> dict:
    return next(x for x in layouts(at) if "Codes of" in x.get("title", {}).get("text", ""))


def where(at: AppTest) -> str:
    """The progress bar's text without the seconds: 'Paused: epoch 3 of 200, batch 4 of 11'."""
    return at.get("progress")[0].proto.text.split(" — ")[0]


def rows(at: AppTest) -> list[str]:
    """The grid's row names, from its caption."""
    return at.get("image")[0].captions[0].split("Rows: ", 1)[1].split(". The same", 1)[0].split(" · ")


def test_watch_the_model_learn_pause_step_resume_and_look_back(no_zoo):
    at = page()
    at.radio(key="tr_data").set_value("digits").run()
    at.slider(key="tr_epochs").set_value(200).run()
    at.number_input(key="tr_latent").set_value(2).run()
    at.text_input(key="tr_name").set_value("watched").run()
    at.button(key="tr_start").click().run()
    assert not at.exception and not at.error
    at = wait_for(at, lambda a: len(a.get("image")) == 1 and len(a.get("plotly_chart")) == 2)
    assert rows(at)[0] == "test image" and len(rows(at)) >= 2
    assert "The same 8 test images every time" in at.get("image")[0].captions[0]
    picture = map_layout(at)
    assert picture["xaxis"]["title"]["text"] == "code unit 0"               # a 2-D code is its own map
    assert any("fixed test images, drawn on the code's own axes" in c.value for c in at.caption)
    assert {b.key for b in at.button} >= {"tr_pause", "tr_stop"}

    at.button(key="tr_pause").click().run()
    at = wait_for(at, lambda a: where(a).startswith("Paused: epoch"))
    held = where(at)
    assert {b.key for b in at.button} >= {"tr_resume", "tr_step_epoch", "tr_step_batch", "tr_stop"}
    epoch = int(held.split("epoch ")[1].split(" of")[0])
    at_end = held.endswith("batch 11 of 11")               # a pause on an epoch's last batch holds at its end
    assert at.button(key="tr_step_epoch").label == ("Step one epoch" if at_end else "Step to the epoch's end")
    batch = int(held.split('batch ')[1].split(' of')[0])
    assert rows(at)[-1] == (f"epoch {epoch}" if at_end else f"epoch {epoch}, {100 * batch / 11:.0f} %")
    time.sleep(1.0)
    at.run()
    assert where(at) == held                                               # nothing moves while paused

    at.button(key="tr_step_epoch").click().run()
    at = wait_for(at, lambda a: where(a).startswith("Paused") and where(a) != held)
    assert at.button(key="tr_step_epoch").label == "Step one epoch"
    epoch += at_end                                                        # from an epoch's end: the next one
    assert where(at) == f"Paused: epoch {epoch} of 200, batch 11 of 11"
    assert rows(at)[-1] == f"epoch {epoch}"                                # the model it holds: that epoch's end
    at.button(key="tr_step_batch").click().run()
    at = wait_for(at, lambda a: where(a).startswith("Paused") and where(a).endswith("batch 10 of 11"))
    assert rows(at)[-1].startswith(f"epoch {epoch + 1}, ")

    at.button(key="tr_resume").click().run()
    at = wait_for(at, lambda a: where(a).startswith("Training"))
    at.button(key="tr_stop").click().run()
    at = wait_for(at, lambda a: len(a.warning) > 0 or len(a.success) > 0)
    assert "Stopped by you" in at.warning[0].value
    back = next(s for s in at.select_slider if s.key.startswith("tr_back_"))
    assert back.options[0] == "untrained" and back.value == back.options[-1]
    back.set_value("untrained").run()
    assert not at.exception and rows(at)[-1] == "untrained"
    assert "untrained" in map_layout(at)["title"]["text"]
    assert not jobs.active_jobs()
