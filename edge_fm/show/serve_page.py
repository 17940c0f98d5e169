"""The web demo's page: its layout, the probability chart and the table of every model's answer.

Dash's modules (``dcc``, ``html``, plotly's ``go``) are handed in by :mod:`edge_fm.show.serve`, which
imports them only when a demo starts.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from edge_fm.io import KB
from edge_fm.show.explain import png_bytes

# The models are edge_fm.show.serve's ServedModel, the config its ServeConfig (not imported: serve imports this).
ServedModel = Any
ServeConfig = Any


def layout(dcc, html, models: list[ServedModel], examples, config: ServeConfig, seen: str = "28x28"):
    card = {"border": "1px solid #d0d7de", "borderRadius": "8px", "padding": "12px", "marginBottom": "12px"}
    return html.Div(
        style={
            "fontFamily": "system-ui, sans-serif",
            "maxWidth": "1200px",
            "margin": "0 auto",
            "padding": "16px",
        },
        children=[
            html.H1("edge-fm demo", style={"marginBottom": "4px"}),
            html.P(
                f"{len(models)} model{'s' if len(models) != 1 else ''} from {config.path}, run on this machine through "
                "LiteRT. Drop an image, or pick a test image.",
                style={"color": "#59636e", "marginTop": 0},
            ),
            dcc.Store(id="image", data=stored(examples[0][1], f"test image of a {examples[0][0]}")),
            dcc.Store(id="pending"),
            html.Div(
                style={"display": "grid", "gridTemplateColumns": "320px 1fr", "gap": "16px"},
                children=[
                    html.Div(
                        children=[
                            dcc.Upload(
                                id="upload",
                                multiple=False,
                                children=html.Div(
                                    ["Drag and drop an image here, or ", html.A("choose a file")]
                                ),
                                style={
                                    **card,
                                    "borderStyle": "dashed",
                                    "textAlign": "center",
                                    "padding": "28px 8px",
                                    "cursor": "pointer",
                                },
                            ),
                            html.Div(
                                id="message",
                                role="alert",
                                style={"color": "#cf222e", "minHeight": "1.2em", "marginBottom": "8px"},
                            ),
                            html.Div("Test images:", style={"color": "#59636e"}),
                            html.Div(
                                style={
                                    "display": "flex",
                                    "flexWrap": "wrap",
                                    "gap": "4px",
                                    "marginBottom": "12px",
                                },
                                children=[
                                    html.Button(
                                        html.Img(src=data_uri(png_bytes(pixels, 2)), alt=name),
                                        id={"kind": "example", "index": i},
                                        title=name,
                                        style={
                                            "padding": "2px",
                                            "border": "1px solid #d0d7de",
                                            "background": "white",
                                        },
                                    )
                                    for i, (name, pixels) in enumerate(examples)
                                ],
                            ),
                            html.Label("Model", htmlFor="model"),
                            dcc.Dropdown(
                                id="model",
                                options=[m.name for m in models],
                                value=models[0].name,
                                clearable=False,
                            ),
                            html.Div(
                                style={**card, "marginTop": "12px"},
                                children=[
                                    html.Div(f"What the model sees ({seen})", style={"color": "#59636e"}),
                                    html.Img(
                                        id="seen",
                                        alt="the image after preprocessing",
                                        style={"width": "224px", "imageRendering": "pixelated"},
                                    ),
                                    html.Div(id="source", style={"color": "#59636e", "fontSize": "0.85em"}),
                                ],
                            ),
                        ]
                    ),
                    html.Div(
                        children=[
                            html.Div(
                                style=card,
                                children=[
                                    html.Div(
                                        ["Answer: ", html.Strong(id="answer")], style={"fontSize": "1.3em"}
                                    ),
                                    dcc.Graph(
                                        id="chart",
                                        config={"displayModeBar": False},
                                        style={"height": "320px"},
                                    ),
                                ],
                            ),
                            html.Div(
                                style={**card, "display": "flex", "gap": "16px", "alignItems": "center"},
                                children=[
                                    html.Img(
                                        id="heat",
                                        alt="occlusion heat map",
                                        style={"width": "224px", "imageRendering": "pixelated"},
                                    ),
                                    html.P(
                                        "Where the model looks: occlusion sensitivity of the .tflite. "
                                        "Each 4x4 patch is hidden in turn; "
                                        "bright where hiding it lowers the probability of the answer most.",
                                        style={"color": "#59636e"},
                                    ),
                                ],
                            ),
                            html.Div(id="models", style=card),
                        ]
                    ),
                ],
            ),
        ],
    )


def chart(go, model: ServedModel, probs: np.ndarray):
    best = int(probs.argmax())
    figure = go.Figure(
        go.Bar(
            x=[float(p) for p in probs],
            y=list(model.labels),
            orientation="h",
            marker_color=["#1f6feb" if i == best else "#8c959f" for i in range(len(probs))],
            text=[f"{p:.1%}" for p in probs],
            textposition="auto",
        )
    )
    figure.update_layout(
        margin={"l": 10, "r": 10, "t": 30, "b": 30},
        xaxis={"range": [0, 1], "tickformat": ".0%"},
        yaxis={"autorange": "reversed"},
        title={"text": f"class probabilities, {model.name}", "font": {"size": 13}},
    )
    return figure


def models_table(html, models: list[ServedModel], answers: dict[str, np.ndarray], chosen: str):
    def cell(value, fmt):
        return "-" if value is None else fmt.format(value)

    header = ["model", "format", "answer", "probability", "size (KB)", "test accuracy", "p50 latency (ms)"]
    rows = []
    for model in sorted(models, key=lambda m: m.row.get("bytes") or 0):
        probs = answers[model.name]
        best = int(probs.argmax())
        latency = (model.row.get("latency") or {}).get("p50_ms")
        rows.append(
            html.Tr(
                [
                    html.Td(html.Strong(model.name) if model.name == chosen else model.name),
                    html.Td(model.row.get("format") or "-"),
                    html.Td(model.labels[best]),
                    html.Td(f"{probs[best]:.1%}"),
                    html.Td(cell(model.row.get("bytes") and model.row["bytes"] / KB, "{:.1f}")),
                    html.Td(cell(model.row.get("accuracy"), "{:.2%}")),
                    html.Td(cell(latency, "{:.3f}")),
                ]
            )
        )
    return [
        html.Div(
            "Every model on this image, with what was measured of it",
            style={"color": "#59636e", "marginBottom": "6px"},
        ),
        html.Table(
            [
                html.Thead(html.Tr([html.Th(h, style={"textAlign": "left"}) for h in header])),
                html.Tbody(rows),
            ],
            id="models-table",
            style={"borderCollapse": "collapse", "width": "100%"},
        ),
    ]


def stored(pixels: np.ndarray, source: str) -> dict[str, str]:
    return {
        "pixels": base64.b64encode(np.asarray(pixels, np.uint8).tobytes()).decode("ascii"),
        "source": source,
    }


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
