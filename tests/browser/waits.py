"""Waiting for a page to be replaced after a click. Selenium's `staleness_of` asks Chromium about
the old element; while the new document is being swapped in, Chromium can answer "Node with
given id does not belong to the document" (a WebDriverException, not StaleElementReference),
which means just what staleness means: the element is gone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

GONE = "does not belong to the document"


def replaced(element: Any) -> Callable[[Any], bool]:
    """A WebDriverWait condition: True once `element` no longer belongs to the page."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    def gone(_driver: Any) -> bool:
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as error:
            if GONE in str(error):
                return True
            raise
        return False
    return gone


def click_and_wait(chrome: Any, button: Any, seconds: float = 20) -> None:
    """Click and wait until the next page replaced this one."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = chrome.find_element(By.TAG_NAME, "html")
    button.click()
    WebDriverWait(chrome, seconds).until(replaced(page))
