"""The search page's layout (Gradio): a text box, the number of results, the ranked results,
and the EFA map of a chosen result. Its handlers turn every error into a line on the page;
an unexpected one is logged with its traceback in the terminal, never shown in the page."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable, Tuple

from configs.errors import UserError
from serving.inference import Encoders
from serving.page_search import MAX_TOP_K, PageGallery, efa_map, search, split_caption

logger = logging.getLogger("search_page")

# Gradio reads this when imported: no usage reporting and no version check from the server.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
import gradio as gr  # noqa: E402

# Fonts the browser has: the default theme would fetch its fonts from a web font service.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
# Results as tall as a person: the gallery's square tiles would shrink a 3:1 image to a third.
CSS = "#results .thumbnail-item {aspect-ratio: 1 / 2; height: auto} #status p, #map-note p {font-size: 1.05em}"


def answered(fallback: Callable[[str], Tuple]) -> Callable:
    """A handler whose errors become ``fallback(message)``: a user mistake its sentence, anything
    else one line naming the error type (the traceback goes to the terminal's log)."""

    def wrap(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def safe(*args: Any) -> Tuple:
            try:
                return handler(*args)
            except UserError as error:
                return fallback(f"⚠️ {error}")
            except Exception as error:  # the page stays up; the terminal has the details
                logger.exception("the page's %s failed", handler.__name__)
                return fallback(f"⚠️ Something went wrong ({type(error).__name__}: {error}); the terminal has details.")

        return safe

    return wrap


def build_page(loaded: Encoders, page: PageGallery, source: str, top_k: int = 10) -> gr.Blocks:
    """The page for ``loaded`` (described as ``source``) over ``page``'s gallery."""

    @answered(lambda message: ([], message, None, None, ""))
    def run_search(query: str, count: float):
        results = search(loaded, page, query, count)
        return results.items, results.summary, results, None, "Choose a result to see its EFA word-to-patch map."

    @answered(lambda message: (None, message))
    def show_map(results, words: str, event: gr.SelectData):
        return efa_map(loaded, results, event.index, words)

    @answered(lambda message: (gr.update(), 0, message))
    def pick_caption(seed: int):
        return split_caption(page, seed), seed + 1, ""

    # The copies of shown images that Gradio serves are deleted after an hour, and all at a restart.
    with gr.Blocks(title="FMFA search", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"## Search by description\n{source} · {page.describe()}", elem_id="about")
        with gr.Row():
            query = gr.Textbox(
                label="Description", placeholder="a woman in a red coat with a black backpack", elem_id="query", scale=4
            )
            count = gr.Slider(1, MAX_TOP_K, value=top_k, step=1, label="Number of results", elem_id="top-k", scale=1)
        with gr.Row():
            go = gr.Button("Search", variant="primary", elem_id="search")
            pick = gr.Button("A caption of the split", elem_id="pick", visible=bool(page.caption_pids))
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            with gr.Column(scale=3):
                shown = gr.Gallery(
                    label="Results, best first (choose one for its map)",
                    elem_id="results",
                    columns=5,
                    height="auto",
                    object_fit="contain",
                    allow_preview=False,
                    format="png",
                )
            with gr.Column(scale=2):
                words = gr.Textbox(label="Words to map (default: the query's first long words)", elem_id="words")
                note = gr.Markdown(elem_id="map-note")
                picture = gr.Image(
                    label="EFA word-to-patch map", elem_id="efa-map", interactive=False, format="png", height=460
                )
        results, seed = gr.State(None), gr.State(0)

        searched = [shown, status, results, picture, note]
        go.click(run_search, [query, count], searched)
        query.submit(run_search, [query, count], searched)
        shown.select(show_map, [results, words], [picture, note])
        pick.click(pick_caption, [seed], [query, seed, status]).then(run_search, [query, count], searched)
    return demo
