// Entry point: the styles and the app, mounted on #app.
import { render } from "preact";
import { html } from "htm/preact";
import "./style.css";
import { App } from "./app.js";

render(html`<${App} />`, document.getElementById("app"));
